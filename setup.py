"""simscale: scaling-law sweeps of small LLaMA-style LMs on simplified text (JAX)."""
from setuptools import find_packages, setup

setup(
    name="simscale",
    version="0.1.0",
    description="Reproduce and generalise 'Emergent Abilities in Reduced-Scale Generative "
    "Language Models': simplified pre-training data, LLaMA grids, zero-shot evals, power laws.",
    packages=find_packages(include=["simscale", "simscale.*"]),
    python_requires=">=3.11",
    install_requires=[
        # jax 0.10.x runs on Python 3.11, 0.11.x (CUDA machines) on 3.12.
        "jax>=0.10,<0.12",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "tensorflow-datasets>=4.9.8",
        "array_record>=0.8",
        "grain>=0.2.12",
        "ml-collections>=1.0",
        "absl-py>=2.0",
        "tokenizers>=0.21",
        "numpy>=1.26",
        "scipy>=1.13",
        "matplotlib>=3.8",
        "pyarrow>=15",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
        "wordfreq>=3.1",
    ],
    extras_require={
        "dev": ["pytest>=8", "ruff>=0.15", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"],
        "ray": ["ray[default]>=2.40"],
        # Hugging Face datasets for SlimPajama/TinyStories/C4, and the paper's own stack
        # (transformers + torch) as the peer in `make bench`.
        "hf": ["datasets>=3.0", "transformers>=4.46"],
        "wandb": ["wandb>=0.18"],  # train.trackers=tensorboard,wandb
        "lmeval": ["lm-eval>=0.4.5", "accelerate>=1.0"],  # accelerate: lm-eval's own hf model needs it
    },
    entry_points={"console_scripts": ["simscale-sweep=simscale.sweep.__main__:main"]},
)
