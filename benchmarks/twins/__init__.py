"""PyTorch twins of the minigen model families, for benchmarks and cross-checks only.

PyTorch is never a dependency of minigen: these modules import torch, and only
`benchmarks/` imports them. Each `benchmarks/twins/<family>.py` defines:

    build(model) -> torch.nn.Module
        The identical architecture, with the minigen model's weights copied in
        (parameter names match minigen's `named_parameters()`, so the copy is by name).
    make_optimizers(torch_model, config) -> dict[str, torch.optim.Optimizer]
        The same optimisers and hyper-parameters as the minigen model's make_optimizers().
    train_step(torch_model, optimizers, x, y, generator) -> dict[str, float]
        One step on the NumPy batch x: (N, 1, 28, 28) float32 in [0, 1], y: (N,) int64; the
        randomness (binarization, noise, timesteps) drawn from the *minigen* Generator with the
        same calls as the minigen model, so both see identical inputs.
    sample(torch_model, n, labels, generator, **options) -> np.ndarray (n, 1, 28, 28) in [0, 1]
    evaluate(torch_model, x, y, generator) -> dict[str, float]   (same metrics as minigen's evaluate)
"""
