"""Builds the optional C++ extension ``kernels._C`` from ``csrc/``.

Package metadata lives in pyproject.toml; this file only adds ``ext_modules`` and
``cmdclass``. Build with ``pip install --no-build-isolation -e .`` so the installed torch
is used (an isolated build cannot import it and skips the extension).

Scope and fallbacks:
    * ``ALGOPERF_BUILD_EXT=0`` skips the extension entirely.
    * ``csrc/*.cpp`` always build as a ``CppExtension``. ``csrc/cuda/*.cu`` are added, as a
      ``CUDAExtension`` with ``-DWITH_CUDA``, only when torch has a CUDA toolkit
      (``CUDA_HOME``) whose ``bin/nvcc`` exists; no GPU is needed to compile.
    * A failed compile is not fatal: the install succeeds with a warning and every op in
      ``kernels`` falls back to its PyTorch path.
"""

import glob
import os
import warnings

from setuptools import setup

_SKIP_MESSAGE = 'kernels._C will not be built; kernels falls back to PyTorch ops. '


def _extension_config():
    """Returns ``(ext_modules, cmdclass)`` for ``setup()``; both empty when skipped."""
    if os.environ.get('ALGOPERF_BUILD_EXT', '1') == '0':
        return [], {}
    try:
        from torch.utils import cpp_extension
    except ImportError:
        warnings.warn(
            _SKIP_MESSAGE + 'torch is not importable at build time; install torch first and '
            'build with `pip install --no-build-isolation -e .`.',
            stacklevel=1,
        )
        return [], {}

    root = os.path.dirname(os.path.abspath(__file__))
    # setuptools wants source paths relative to the project root.
    sources = sorted(glob.glob('csrc/*.cpp', root_dir=root))
    cuda_sources = sorted(glob.glob('csrc/cuda/*.cu', root_dir=root))
    cuda_home = cpp_extension.CUDA_HOME
    has_nvcc = cuda_home is not None and os.path.exists(os.path.join(cuda_home, 'bin', 'nvcc'))

    # No -std flag: BuildExtension appends the standard the installed torch's headers need
    # (c++17 on older releases, c++20 on torch 2.13). Forcing c++17 on 2.13 compiles, but with
    # -Wc++20-extensions warnings from c10/core/AutogradState.h. csrc/ itself is C++17.
    # -fopenmp: ATen's at::parallel_for runs the chunk loop on the OpenMP pool only when the
    # extension itself is built with OpenMP; without it every kernel ran on one thread
    # (AdamW at 10M fp32 params: 15.6 ms -> 7.6 ms on 2 cores). At run time the process keeps
    # using the OpenMP runtime torch already loaded.
    extra_compile_args = {'cxx': ['-O3', '-fopenmp']}
    extra_link_args = ['-fopenmp']
    if cuda_sources and has_nvcc:
        # -lineinfo maps SASS back to source lines in Nsight Compute at no runtime cost.
        extra_compile_args['nvcc'] = ['-O3', '-lineinfo']
        extension = cpp_extension.CUDAExtension(
            name='kernels._C',
            sources=sources + cuda_sources,
            define_macros=[('WITH_CUDA', None)],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    else:
        extension = cpp_extension.CppExtension(
            name='kernels._C',
            sources=sources,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )

    class OptionalBuildExtension(cpp_extension.BuildExtension):
        """``BuildExtension`` (ninja when available) whose failure only warns."""

        def build_extensions(self):
            try:
                super().build_extensions()
            except Exception as error:  # noqa: BLE001 - any build failure must stay non-fatal
                warnings.warn(
                    _SKIP_MESSAGE + f'Building it failed with {type(error).__name__}: {error}',
                    stacklevel=1,
                )
                # Nothing was built, so inplace copies and wheel outputs must not look for it.
                self.extensions = []

    return [extension], {'build_ext': OptionalBuildExtension}


ext_modules, cmdclass = _extension_config()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
