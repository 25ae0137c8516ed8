// Criteo 1TB TSV lines -> upstream AlgoPerf's float32 features, on CPU.
//
// Spec: kernels/criteo_tsv.py::parse_criteo_tsv_reference, which documents the upstream
// semantics (algoperf/workloads/criteo1tb/input_pipeline.py, tf.io.decode_csv with
// na_value='-1', then log(relu(x) + 1) and tf.strings.to_hash_bucket_fast). Upstream runs
// that per batch in TF with 16 parallel calls on rank 0; here one call parses the lines of
// a 64 MiB chunk that belong to one rank, under one at::parallel_for over lines.
//
// A line is `label \t I1..I13 \t C1..C26`: 40 fields, any of them empty. Per line:
//   * label, I1..I13: NA ("" or "-1") -> 0; else an integer, parsed exactly and rounded
//     once to float32 (what TF's correctly rounded strtof gives for an integer string);
//     dense features then become log(float32(relu(x) + 1)), the log taken in double and
//     rounded once (correctly rounded in practice; see the reference for TF's Eigen log).
//   * C1..C26 (column c = 0..25): NA -> "00000000"; else must be hex. The string
//     value + decimal(c) is hashed with FarmHash Fingerprint64 (TF's to_hash_bucket_fast),
//     taken modulo vocab[c] and cast to float32 (ids > 2^24 lose precision, as upstream).
//   * '\r' anywhere in the line is dropped first, as TF's BufferedInputStream::ReadLine does.
// A malformed line (field count != 40, a bad integer, a non-hex categorical) is reported
// in the returned error table as (line, code, detail); its output row is zeroed. The
// caller raises or skips; codes are kernels/criteo_tsv.py's ERROR_* constants.
//
// Throughput: a real line is ~250 bytes (1.1 TB / 4.37e9 lines) with 26 hashes of 9-10
// byte keys and 14 short integers, so the parse is bound by branches and multiplies, not
// memory. On the fixture's 200k lines (one thread of the 2-core AMD EPYC dev box, thread
// CPU time, perf-guided): 1.8 us/line as first written, 0.65 us/line after the three
// changes commented below (table-driven character checks, the suffixed hash, FastMod).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "farmhash.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace {

using algoperf::farmhash::fingerprint64;
using algoperf::farmhash::fingerprint64_suffixed;

constexpr int kNumDense = 13;
constexpr int kNumCat = 26;
constexpr int kNumFields = 1 + kNumDense + kNumCat;  // 40
constexpr int kNumInputs = kNumDense + kNumCat;      // 39
// Error codes, mirrored by kernels/criteo_tsv.py.
constexpr int64_t kErrFieldCount = 1;  // detail: number of fields found
constexpr int64_t kErrBadInt = 2;      // detail: field index 0..13
constexpr int64_t kErrBadHex = 3;      // detail: field index 14..39
// ~0.65 us per line: 256 lines (~170 us) per task keeps scheduling overhead < 1%.
constexpr int64_t kGrainLines = 256;
// Every key is value + "0".."25"; real values are 8 chars, so 64 bytes never spills.
constexpr size_t kKeyStack = 64;
constexpr const char* kDefaultCat = "00000000";

inline bool is_na(const char* b, const char* e) {
  return b == e || (e - b == 2 && b[0] == '-' && b[1] == '1');
}

// Character classes as a table: the per-character checks of a field then AND table
// entries without branching. With `if (!is_hex(c)) return` the digit-or-letter branch
// was mispredicted on every other character of the random hex values (~25% of the parse
// time in perf on the fixture's lines).
constexpr uint8_t kDigitBit = 1, kHexBit = 2;
struct CharClass {
  uint8_t bits[256];
  constexpr CharClass() : bits() {
    for (int c = '0'; c <= '9'; ++c) bits[c] = kDigitBit | kHexBit;
    for (int c = 'a'; c <= 'f'; ++c) bits[c] = bits[c - 'a' + 'A'] = kHexBit;
  }
};
constexpr CharClass kClass{};
inline uint8_t char_bits(char c) { return kClass.bits[static_cast<uint8_t>(c)]; }

// log(float32(v) + 1) rounded to float32, for 0 <= v < kLogTableSize: dense values are
// mostly small counts (the fixture's and the real data's medians are < 100), and a
// lookup replaces a ~20 ns libm log. Built with the very expression of the slow path.
constexpr int64_t kLogTableSize = 1 << 16;
inline float log1p_f32(float x) {
  const float y = (x > 0.0f ? x : 0.0f) + 1.0f;  // fp32 add, as TF's relu(x) + 1
  return static_cast<float>(std::log(static_cast<double>(y)));
}
const float* log_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(kLogTableSize);
    for (int64_t v = 0; v < kLogTableSize; ++v) t[v] = log1p_f32(static_cast<float>(v));
    return t;
  }();
  return table.data();
}

// x % d for a fixed d by two multiplies (Lemire, Kaser & Kurz 2019, "Faster remainder by
// direct computation", exact for all 64-bit x and d): a 64-bit div is ~40 cycles here,
// 26 per line (~10% of the parse in perf).
struct FastMod {
  uint64_t d = 1;
#if defined(__SIZEOF_INT128__)
  __uint128_t m = 0;
  explicit FastMod(uint64_t divisor = 1) : d(divisor), m(~__uint128_t{0} / divisor + 1) {}
  uint64_t operator()(uint64_t x) const {
    const __uint128_t low = m * x;
    const __uint128_t bottom = (static_cast<__uint128_t>(static_cast<uint64_t>(low)) * d) >> 64;
    const __uint128_t top = (low >> 64) * d;
    return static_cast<uint64_t>((bottom + top) >> 64);
  }
#else
  explicit FastMod(uint64_t divisor = 1) : d(divisor) {}
  uint64_t operator()(uint64_t x) const { return x % d; }
#endif
};

// [+-]?[0-9]+ -> the float32 nearest to its exact value (*x), and the value itself (*iv)
// when it has at most 18 digits. Returns false if malformed or if it rounds to +-inf (TF's
// safe_strtof refuses out-of-range values).
bool parse_int(const char* b, const char* e, float* x, int64_t* iv, bool* exact) {
  bool neg = false;
  if (b < e && (*b == '+' || *b == '-')) neg = (*b++ == '-');
  if (b == e) return false;
  uint8_t ok = kDigitBit;
  if (e - b <= 18) {   // < 10^18 < 2^63: exact in int64, then one RNE rounding to float.
    uint64_t acc = 0;  // unsigned: garbage characters wrap instead of overflowing (UB)
    for (const char* c = b; c < e; ++c) {
      ok &= char_bits(*c);
      acc = acc * 10 + static_cast<uint8_t>(*c - '0');
    }
    if (!ok) return false;
    const int64_t v = static_cast<int64_t>(acc);
    *iv = neg ? -v : v;
    *exact = true;
    *x = neg ? -static_cast<float>(v) : static_cast<float>(v);  // keeps "-0" as -0.0
    return true;
  }
  for (const char* c = b; c < e; ++c) ok &= char_bits(*c);
  if (!ok) return false;
  const std::string digits(b, e);  // rare: glibc's strtof is correctly rounded
  const float v = std::strtof(digits.c_str(), nullptr);
  if (std::isinf(v)) return false;
  *x = neg ? -v : v;
  *exact = false;
  return true;
}

// Splits [p, e) at tabs into fb/fe (the first kNumFields fields); returns the field count.
inline int64_t split_fields(const char* p, const char* e, const char** fb, const char** fe) {
  int64_t nf = 0;
  const char* start = p;
  auto on_tab = [&](const char* t) {
    if (nf < kNumFields) {
      fb[nf] = start;
      fe[nf] = t;
    }
    ++nf;
    start = t + 1;
  };
  const char* c = p;
#if defined(__SSE2__)
  // 16 bytes per compare + movemask: a line is ~250 bytes and 39 tabs, where a memchr call
  // per field cost ~10% of the parse.
  const __m128i tab = _mm_set1_epi8('\t');
  for (; c + 16 <= e; c += 16) {
    const __m128i block = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c));
    unsigned mask = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(block, tab)));
    for (; mask != 0; mask &= mask - 1) on_tab(c + __builtin_ctz(mask));
  }
#endif
  for (; c < e; ++c) {
    if (*c == '\t') on_tab(c);
  }
  if (nf < kNumFields) {
    fb[nf] = start;
    fe[nf] = e;
  }
  return nf + 1;
}

struct ParseArgs {
  const char* data;
  const int64_t* starts;
  const int64_t* ends;
  std::array<FastMod, kNumCat> vocab;
  std::array<float, kNumCat> default_ids;  // ids of "00000000" + str(c)
  const float* log_table;
  float* inputs;
  float* targets;
};

inline float bucket_id(const char* key, size_t len, const FastMod& vocab) {
  return static_cast<float>(vocab(fingerprint64(key, len)));
}

// Parses one line into row[0..38] and *target. Returns 0 or an error code (+ *detail).
int64_t parse_line(const ParseArgs& a, const char* p, const char* e, float* row, float* target,
                   int64_t* detail, std::string& scratch) {
  if (std::memchr(p, '\r', e - p) != nullptr) {
    scratch.clear();
    for (const char* c = p; c < e; ++c) {
      if (*c != '\r') scratch.push_back(*c);
    }
    p = scratch.data();
    e = p + scratch.size();
  }
  const char* fb[kNumFields];
  const char* fe[kNumFields];
  const int64_t nf = split_fields(p, e, fb, fe);
  if (nf != kNumFields) {
    *detail = nf;
    return kErrFieldCount;
  }
  for (int f = 0; f <= kNumDense; ++f) {
    float x = 0.0f;
    int64_t iv = 0;
    bool exact = true;
    if (!is_na(fb[f], fe[f]) && !parse_int(fb[f], fe[f], &x, &iv, &exact)) {
      *detail = f;
      return kErrBadInt;
    }
    if (f == 0) {
      *target = x;
    } else if (exact && iv < kLogTableSize) {
      row[f - 1] = a.log_table[iv > 0 ? iv : 0];
    } else {
      row[f - 1] = log1p_f32(x);
    }
  }
  char key[kKeyStack];
  for (int c = 0; c < kNumCat; ++c) {
    const char* b = fb[1 + kNumDense + c];
    const char* fend = fe[1 + kNumDense + c];
    if (is_na(b, fend)) {
      row[kNumDense + c] = a.default_ids[c];
      continue;
    }
    uint8_t ok = kHexBit;
    for (const char* q = b; q < fend; ++q) ok &= char_bits(*q);
    if (!ok) {
      *detail = 1 + kNumDense + c;
      return kErrBadHex;
    }
    size_t n = fend - b;
    const size_t d = c < 10 ? 1 : 2;
    if (n >= 8 && n + d <= 16) {
      const uint64_t suffix =
          c < 10 ? uint64_t('0' + c) : uint64_t('0' + c / 10) | uint64_t('0' + c % 10) << 8;
      const uint64_t h = fingerprint64_suffixed(b, n, suffix, d);
      row[kNumDense + c] = static_cast<float>(a.vocab[c](h));
    } else if (n + 2 <= kKeyStack) {
      std::memcpy(key, b, n);
      if (c >= 10) key[n++] = static_cast<char>('0' + c / 10);
      key[n++] = static_cast<char>('0' + c % 10);
      row[kNumDense + c] = bucket_id(key, n, a.vocab[c]);
    } else {
      std::string long_key(b, fend);
      long_key += std::to_string(c);
      row[kNumDense + c] = bucket_id(long_key.data(), long_key.size(), a.vocab[c]);
    }
  }
  return 0;
}

void check_bytes(const at::Tensor& data, const char* name) {
  TORCH_CHECK(data.device().is_cpu(), name, " must be a CPU tensor, got ", data.device());
  TORCH_CHECK(data.scalar_type() == at::kByte, name, " must be uint8, got ", data.scalar_type());
  TORCH_CHECK(data.dim() == 1 && data.is_contiguous(), name, " must be 1-D and contiguous");
}

void check_int64(const at::Tensor& t, const char* name) {
  TORCH_CHECK(
      t.device().is_cpu() && t.scalar_type() == at::kLong && t.dim() == 1 && t.is_contiguous(),
      name, " must be a contiguous 1-D int64 CPU tensor");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> criteo_tsv_parse_cpu(at::Tensor data,
                                                                    at::Tensor starts,
                                                                    at::Tensor ends,
                                                                    at::Tensor vocab_sizes) {
  check_bytes(data, "data");
  check_int64(starts, "starts");
  check_int64(ends, "ends");
  check_int64(vocab_sizes, "vocab_sizes");
  TORCH_CHECK(starts.numel() == ends.numel(), "starts and ends differ in length: ", starts.numel(),
              " vs ", ends.numel());
  TORCH_CHECK(vocab_sizes.numel() == kNumCat, "vocab_sizes must have 26 entries, got ",
              vocab_sizes.numel());
  const int64_t n = starts.numel();
  const int64_t nbytes = data.numel();
  ParseArgs a;
  a.data = reinterpret_cast<const char*>(data.data_ptr<uint8_t>());
  a.starts = starts.data_ptr<int64_t>();
  a.ends = ends.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {  // ~0.1 ns per line: serial is fine.
    TORCH_CHECK(0 <= a.starts[i] && a.starts[i] <= a.ends[i] && a.ends[i] <= nbytes, "line ", i,
                " spans [", a.starts[i], ", ", a.ends[i], ") outside data of ", nbytes, " bytes");
  }
  for (int c = 0; c < kNumCat; ++c) {
    const int64_t v = vocab_sizes.data_ptr<int64_t>()[c];
    TORCH_CHECK(v > 0, "vocab_sizes[", c, "] must be positive, got ", v);
    a.vocab[c] = FastMod(static_cast<uint64_t>(v));
    const std::string key = std::string(kDefaultCat) + std::to_string(c);
    a.default_ids[c] = bucket_id(key.data(), key.size(), a.vocab[c]);
  }
  a.log_table = log_table();
  at::Tensor inputs = at::empty({n, kNumInputs}, at::kFloat);
  at::Tensor targets = at::empty({n}, at::kFloat);
  a.inputs = inputs.data_ptr<float>();
  a.targets = targets.data_ptr<float>();

  std::mutex mu;
  std::vector<std::array<int64_t, 3>> errors;
  at::parallel_for(0, n, kGrainLines, [&](int64_t begin, int64_t end) {
    std::string scratch;
    for (int64_t i = begin; i < end; ++i) {
      float* row = a.inputs + i * kNumInputs;
      int64_t detail = 0;
      const int64_t code = parse_line(a, a.data + a.starts[i], a.data + a.ends[i], row,
                                      a.targets + i, &detail, scratch);
      if (code != 0) {
        std::fill(row, row + kNumInputs, 0.0f);
        a.targets[i] = 0.0f;
        std::lock_guard<std::mutex> lock(mu);  // error path only
        errors.push_back({i, code, detail});
      }
    }
  });
  std::sort(errors.begin(), errors.end());
  at::Tensor err = at::empty({static_cast<int64_t>(errors.size()), 3}, at::kLong);
  if (!errors.empty())
    std::memcpy(err.data_ptr<int64_t>(), errors.data(), errors.size() * sizeof(errors[0]));
  return {inputs, targets, err};
}

at::Tensor criteo_find_newlines_cpu(at::Tensor data) {
  check_bytes(data, "data");
  const char* p = reinterpret_cast<const char*>(data.data_ptr<uint8_t>());
  const int64_t n = data.numel();
  // Segments of >= 1 MiB: memchr runs at ~10 GB/s, so a segment is ~100 us of work.
  constexpr int64_t kSegment = 1 << 20;
  const int64_t nseg = std::max<int64_t>(1, (n + kSegment - 1) / kSegment);
  std::vector<std::vector<int64_t>> found(nseg);
  at::parallel_for(0, nseg, 1, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      const int64_t lo = s * kSegment, hi = std::min(n, lo + kSegment);
      for (const char* c = p + lo; c < p + hi;) {
        c = static_cast<const char*>(std::memchr(c, '\n', p + hi - c));
        if (c == nullptr) break;
        found[s].push_back(c - p);
        ++c;
      }
    }
  });
  int64_t total = 0;
  for (const auto& f : found) total += static_cast<int64_t>(f.size());
  at::Tensor out = at::empty({total}, at::kLong);
  int64_t* o = out.data_ptr<int64_t>();
  for (const auto& f : found) o = std::copy(f.begin(), f.end(), o);
  return out;
}

at::Tensor farmhash_fingerprint64_cpu(at::Tensor data, at::Tensor offsets) {
  check_bytes(data, "data");
  check_int64(offsets, "offsets");
  TORCH_CHECK(offsets.numel() >= 1, "offsets must hold at least one entry (0)");
  const int64_t n = offsets.numel() - 1;
  const int64_t* off = offsets.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(0 <= off[i] && off[i] <= off[i + 1] && off[i + 1] <= data.numel(),
                "offsets must be non-decreasing within [0, ", data.numel(), "]");
  }
  const char* p = reinterpret_cast<const char*>(data.data_ptr<uint8_t>());
  at::Tensor out = at::empty({n}, at::kLong);  // the uint64 bits, read back as uint64
  int64_t* o = out.data_ptr<int64_t>();
  at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      o[i] = static_cast<int64_t>(fingerprint64(p + off[i], off[i + 1] - off[i]));
    }
  });
  return out;
}
