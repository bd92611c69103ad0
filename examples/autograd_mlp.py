# %% [markdown]
# # Autograd from scratch: a digit classifier written with nothing but Tensor, ops and Adam
#
# Runs as a script, or cell by cell as a notebook (docs/notebooks.md).

# %%
"""Autograd from scratch: a digit classifier written with nothing but Tensor, ops and Adam.

The whole of deep learning in one loop:

    logits = relu(x W1 + b1) W2 + b2          the model: two matrix products (x: (N, 784))
    loss   = cross_entropy(logits, y)          how wrong it is, one number
    loss.backward()                            autograd: d loss / d every parameter
    opt.step()                                 move the parameters a little downhill

`backward` walks the graph the forward pass recorded (minigen/tensor.py) and calls each
op's backward (minigen/ops/). No trainer here: the loop is written out. `viz.draw` draws
that graph (graph.svg).

    python examples/autograd_mlp.py --data-dir ../shared/data/mnist

trains on the 5,000 digits of mnist-5k and reports accuracy on the 10,000 MNIST test
digits (without --data-dir: on a held-out tenth of mnist-5k). Target: above 90%.
"""
from __future__ import annotations

import math
import os

import numpy as np
from common import digits, parser   # examples/common.py: the options and data every example shares

from minigen import ops, viz
from minigen.data import DataLoader
from minigen.nn import Parameter
from minigen.optim import Adam
from minigen.plots import save_grid, save_loss_curve
from minigen.random import Generator
from minigen.tensor import Tensor, no_grad


# %% [markdown]
# ## `init_mlp`
# The parameters: two weight matrices and two bias vectors, He-initialised.

# %%
def init_mlp(hidden: int, generator: Generator) -> dict[str, Parameter]:
    """784 -> hidden -> 10. He initialisation: weights ~ N(0, 2 / fan_in) keep ReLU activations' scale."""
    return {"W1": Parameter(generator.normal((784, hidden), std=math.sqrt(2 / 784))),
            "b1": Parameter(np.zeros(hidden, np.float32)),
            "W2": Parameter(generator.normal((hidden, 10), std=math.sqrt(2 / hidden))),
            "b2": Parameter(np.zeros(10, np.float32))}


# %% [markdown]
# ## `mlp`
# The model: two matrix products with a ReLU between them.

# %%
def mlp(params: dict, x: Tensor) -> Tensor:
    """x: (N, 784) -> logits (N, 10)."""
    h = ops.relu(x @ params["W1"] + params["b1"])
    return h @ params["W2"] + params["b2"]


# %% [markdown]
# ## `accuracy`
# The share of digits whose largest logit is the right one (no graph recorded).

# %%
def accuracy(params: dict, x: np.ndarray, y: np.ndarray) -> float:
    with no_grad():                       # evaluation records no graph
        return float((mlp(params, Tensor(x)).data.argmax(axis=1) == y).mean())


# %% [markdown]
# ## `main`
# Train it: the loop is written out. In a notebook, set `sys.argv` in a cell above to pick options (e.g. `--epochs 1`).

# %%
def main(argv=None) -> float:
    p = parser(__doc__, "autograd_mlp", epochs=15)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    x_train, y_train = digits("train")
    x_test, y_test = digits("test", args.data_dir)
    x_train, x_test = x_train.reshape(-1, 784), x_test.reshape(-1, 784)
    generator = Generator(args.seed)
    params = init_mlp(args.hidden, generator)
    opt = Adam(params.values(), lr=args.lr)
    loader = DataLoader(x_train, y_train, batch_size=64, generator=Generator(args.seed + 1))

    # the graph one forward pass records, drawn before any backward frees it (graph.svg; graph.dot without
    # Graphviz): x and the four parameters flow through matmul, add, relu, ... into the loss
    graph = viz.draw(ops.cross_entropy(mlp(params, Tensor(x_train[:64])), y_train[:64]),
                     os.path.join(args.out, "graph.svg"), names=params)

    history, step = [], 0
    for epoch in range(args.epochs):
        for xb, yb in loader:
            loss = ops.cross_entropy(mlp(params, Tensor(xb)), yb)   # forward: builds the graph
            opt.zero_grad()
            loss.backward()                                         # backward: fills p.grad
            opt.step()                                              # update: p -= lr * (Adam's direction)
            step += 1
            history.append((step, loss.item()))
            if args.max_steps and step >= args.max_steps:
                break
        print(f"epoch {epoch + 1}: last loss {history[-1][1]:.3f}, test accuracy "
              f"{accuracy(params, x_test, y_test):.2%}")
        if args.max_steps and step >= args.max_steps:
            break

    acc = accuracy(params, x_test, y_test)
    print(f"test accuracy {acc:.2%} on {len(y_test):,} test digits "
          f"({'reaches' if acc > 0.9 else 'is below'} the 90% target)")
    with no_grad():
        wrong = np.flatnonzero(mlp(params, Tensor(x_test)).data.argmax(axis=1) != y_test)[:40]
    # what the first layer learnt: each hidden unit's 784 weights seen as a 28x28 picture
    w1 = params["W1"].data.T[:40]
    w1 = (w1 - w1.min(axis=1, keepdims=True)) / np.ptp(w1, axis=1, keepdims=True)
    figures = [graph, save_loss_curve({"loss": history}, os.path.join(args.out, "loss.png")),
               save_grid(w1.reshape(-1, 1, 28, 28), os.path.join(args.out, "first_layer_weights.png"), nrow=10,
                         title="first-layer weights of 40 hidden units"),
               save_grid(x_test[wrong].reshape(-1, 1, 28, 28), os.path.join(args.out, "mistakes.png"), nrow=10,
                         title="test digits the MLP gets wrong")]
    print("figures:", ", ".join(figures))
    return acc


# %%
if __name__ == "__main__":
    main()
