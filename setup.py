"""tf_memorization: what neural networks memorize (Feldman & Zhang, 2020)."""

import setuptools

setuptools.setup(
    name='tf_memorization',
    version='0.1.0',
    description=('Memorization and influence estimation for Keras models by '
                 'subsampled training (Feldman & Zhang, NeurIPS 2020).'),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['tf_memorization',
                                               'tf_memorization.*']),
    python_requires='>=3.10',
    install_requires=[
        'tensorflow>=2.16',
        'keras>=3.0',
        'tensorflow-datasets>=4.9',
        'importlib_resources',  # tensorflow-datasets 4.9 imports it undeclared
        'numpy',
        'absl-py',
        'gin-config>=0.5',
        'scikit-learn',  # ships the offline digits dataset
        'matplotlib',
        'pillow',  # image folders (folders.py) and the report's thumbnails
        'tensorboard',  # per-trial scalars; TensorFlow no longer pulls it in
        'scipy',
    ],
    entry_points={
        'console_scripts': [
            f'tfmem-{name.replace("_workdir", "").replace("_trials", "")}=tf_memorization.console:{name}'
            for name in ('train', 'estimate', 'report', 'inspect_workdir',
                         'compare', 'import_trials')
        ],
    },
    extras_require={
        'test': ['pytest', 'pytest-xdist'],
        'gpu': ['tensorflow[and-cuda]>=2.16'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
        'License :: OSI Approved :: Apache Software License',
    ],
)
