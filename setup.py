"""Install nfnets_mm.  The tested, pinned set lives in requirements/constraints.txt;
``bash tools/setup_env.sh`` builds a complete environment with it."""
import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    scope = {}
    with open(osp.join(osp.dirname(__file__), 'nfnets_mm', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='nfnets_mm',
    version=read_version(),
    description='Normalizer-Free Networks (NFNets) and Adaptive Gradient Clipping '
    'for MMPretrain and MMDetection',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['nfnets_mm', 'nfnets_mm.*']),
    python_requires='>=3.9',
    install_requires=[
        'torch>=2.1',
        'torchvision>=0.16',
        'numpy>=1.24',
        'mmengine>=0.10.4,<1.0',
        'mmcv>=2.0.0,<2.2.0',
        'mmpretrain>=1.2.0,<2.0',
        'mmdet>=3.3.0,<3.4',
        'pycocotools>=2.0.7',
        'matplotlib>=3.7',
        'pillow>=9.0',
    ],
    extras_require={
        'tests': [
            'pytest>=7.4',
            'timm>=1.0',
            'onnx>=1.16',
            'onnxruntime>=1.18',
            'onnxscript>=0.1',
        ],
    },
    license='Apache-2.0',
    zip_safe=False,
)
