"""A tiny fastMRI knee single-coil data set in the real on-disk layout, for tests.

Real files are ``knee_singlecoil_{train,val}/file<id>.h5`` with datasets ``kspace``
complex64 (slices, 640, W), W around 368 and varying, ``reconstruction_esc`` float32
(slices, 320, 320) and the attribute ``max`` (the volume's largest target value). Here
each volume is a smooth random magnitude image of 640 x W whose orthonormal centred FFT
is the k-space, and whose centre 320 x 320 magnitude is the target, so the pipeline's
crop is a real one and fully sampled k-space reconstructs the target. Deterministic in
``seed``.
"""

import os
from collections.abc import Sequence

import h5py
import numpy as np

HEIGHT = 640
TARGET = 320


def _volume(rng: np.random.Generator, slices: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(kspace complex64 [slices, 640, width], target float32 [slices, 320, 320])."""
    coarse = rng.standard_normal((slices, HEIGHT // 32, width // 16 + 1))
    rows = np.linspace(0, coarse.shape[1] - 1, HEIGHT)
    cols = np.linspace(0, coarse.shape[2] - 1, width)
    smooth = np.stack([
        np.array([np.interp(cols, np.arange(c.shape[1]), r) for r in c]) for c in coarse
    ])  # fmt: skip
    smooth = np.stack([
        np.array([np.interp(rows, np.arange(s.shape[0]), col) for col in s.T]).T for s in smooth
    ])  # fmt: skip
    magnitude = 1e-4 * (np.abs(smooth) + 0.1)
    phase = np.exp(1j * 0.3 * rng.standard_normal((slices, 1, 1)))
    image = magnitude * phase
    kspace = np.fft.fftshift(
        np.fft.fft2(np.fft.ifftshift(image, axes=(1, 2)), norm='ortho'), axes=(1, 2)
    )
    top, left = (HEIGHT - TARGET) // 2, (width - TARGET) // 2
    target = magnitude[:, top : top + TARGET, left : left + TARGET]
    return kspace.astype(np.complex64), target.astype(np.float32)


def write_fastmri_fixture(
    data_dir: str,
    seed: int = 0,
    num_train: int = 2,
    num_val: int = 3,
    slices: int | Sequence[int] = 3,
    widths: Sequence[int] = (368, 372, 356),
) -> dict[str, list[str]]:
    """Writes ``knee_singlecoil_{train,val}/file<NNNN>.h5``; returns {'train': paths, 'val': paths}.

    Args:
        data_dir: Created if missing.
        seed: Seeds every value.
        num_train, num_val: Files per directory.
        slices: Slices per file (one int, or one per file: train files first).
        widths: k-space widths, cycled over the files.
    """
    rng = np.random.default_rng(seed)
    counts = [slices] * (num_train + num_val) if isinstance(slices, int) else list(slices)
    out: dict[str, list[str]] = {'train': [], 'val': []}
    for i in range(num_train + num_val):
        kind = 'train' if i < num_train else 'val'
        folder = os.path.join(data_dir, f'knee_singlecoil_{kind}')
        os.makedirs(folder, exist_ok=True)
        # Names out of creation order, so sorting matters.
        path = os.path.join(folder, f'file{(7919 * (i + 1)) % 10007:05d}.h5')
        kspace, target = _volume(rng, counts[i], widths[i % len(widths)])
        with h5py.File(path, 'w') as hf:
            hf.create_dataset('kspace', data=kspace)
            hf.create_dataset('reconstruction_esc', data=target)
            hf.attrs['max'] = float(target.max())
        out[kind].append(path)
    return out
