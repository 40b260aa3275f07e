"""The model, data and hyperparameters shared by the distributed tests'
workers and the one-process runs they are compared with."""

import torch

STEPS, SAVE_AT = 6, 3
HYPER = {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.01}
VOCAB, DIM, SEQ, BATCH = 37, 16, 8, 4


class Block(torch.nn.Module):
    """Pre-norm attention + MLP, as in a transformer layer."""

    def __init__(self):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(DIM)
        self.qkv = torch.nn.Linear(DIM, 3 * DIM)
        self.proj = torch.nn.Linear(DIM, DIM)
        self.norm2 = torch.nn.LayerNorm(DIM)
        self.up = torch.nn.Linear(DIM, 4 * DIM)
        self.down = torch.nn.Linear(4 * DIM, DIM)
        self.gate = torch.nn.Parameter(torch.ones(1))  # a 1-element parameter: an empty shard

    def forward(self, x):
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        att = torch.softmax(q @ k.transpose(-1, -2) / DIM ** 0.5, dim=-1)
        x = x + self.gate * self.proj(att @ v)
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm2(x))))


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, DIM)
        self.blocks = torch.nn.ModuleList([Block(), Block()])
        self.head = torch.nn.Linear(DIM, 3)  # 3 rows: uneven shards on 2 and 4 ranks

    def forward(self, tokens):
        x = self.embed(tokens)
        for b in self.blocks:
            x = b(x)
        return self.head(x.mean(dim=1))


def make_model():
    torch.manual_seed(0)
    return Model()


def loss(model, t):
    """Step t's loss: the same batch on every rank."""
    g = torch.Generator().manual_seed(1000 + t)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ), generator=g)
    target = torch.randint(0, 3, (BATCH,), generator=g)
    return torch.nn.functional.cross_entropy(model(tokens), target)
