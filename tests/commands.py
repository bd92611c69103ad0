"""Running `minigen` commands in tests: tiny IDX data to train on, and the CLI called in-process."""
import contextlib
import io

import numpy as np


def write_noise_idx(folder, train_n: int, test_n: int) -> None:
    """An MNIST-style IDX dataset of uniform noise in `folder` (`--dataset mnist --data-dir folder`): what
    the training loop needs, loaded in milliseconds. Labels count 0..9 over and over."""
    from minigen.data import write_idx
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train_n), ("t10k", test_n)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))


def run_in_process(argv):
    """minigen.cli.main(argv) (paths allowed among the words) with stdout and stderr captured:
    (exit status, stderr). Much faster than a subprocess; use one only for a real kill or hang."""
    from minigen.cli import main
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main([str(word) for word in argv])
        except SystemExit as e:                 # argparse: usage errors (2) and --help (0)
            code = e.code
    return code, err.getvalue()
