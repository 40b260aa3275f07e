"""The model, data and hyperparameters of the DeepSpeed test and its worker."""

import torch

STEPS, BATCH = 5, 8
HYPER = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))


def batch(t, rank):
    g = torch.Generator().manual_seed(100 * t + rank)
    return torch.randn(BATCH, 16, generator=g), torch.randn(BATCH, 4, generator=g)
