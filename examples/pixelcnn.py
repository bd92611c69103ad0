# %% [markdown]
# # PixelCNN: the autoregressive model. One pixel at a time, each given all the pixels before it
#
# Runs as a script, or cell by cell as a notebook (docs/notebooks.md).

# %%
"""PixelCNN: the autoregressive model. One pixel at a time, each given all the pixels before it.

    p(x) = p(x_1) p(x_2 | x_1) ... p(x_784 | x_1 .. x_783)       (raster order: row by row)

One convolutional network outputs all 784 conditionals at once; masked convolutions
(`causal_mask` in minigen/ops/conv.py, used by `masked_conv2d`) zero every weight that would
let a pixel see itself or a later pixel. So training and the exact likelihood take one pass,
and sampling takes 784 passes, one per pixel (minigen/models/pixelcnn.py, `PixelCNN.sample`).

After training (minigen's trainer, into OUT/pixelcnn) this script shows:

* the two masks, printed (type "A" for the first layer, type "B" after it);
* receptive_field.png: which input pixels the prediction for the centre pixel depends on,
  found with autograd (the gradient of that one logit w.r.t. the input image). Everything
  at and after the centre is exactly zero: the model cannot cheat;
* samples.png (the trainer's): digits drawn pixel by pixel.
"""
from __future__ import annotations

import os

import numpy as np
from common import digits, parser, train_family

from minigen import ops
from minigen.data import binarize_fixed
from minigen.plots import save_rows
from minigen.tensor import Tensor


# %% [markdown]
# ## `main`
# Run it: `main()` takes the same options as the command line; in a notebook, set `sys.argv` in a cell above to pick them (e.g. `--max-steps 50`).

# %%
def main(argv=None):
    args = parser(__doc__, "pixelcnn", epochs=3).parse_args(argv)
    for kind in ("A", "B"):
        print(f"causal mask type {kind} (5x5):\n{ops.causal_mask(5, 5, kind).astype(int)}")
    model = train_family(args, "pixelcnn", channels=32, num_blocks=5)
    model.eval()

    x, _ = digits("test", args.data_dir)
    image = Tensor(binarize_fixed(x[:1]), requires_grad=True)
    logits = model(image)                                    # (1, outputs, 28, 28): every conditional at once
    logits[0, 0, 14, 14].backward()                         # d(the centre pixel's logit) / d(input pixels)
    influence = np.abs(image.grad[0, 0])
    after = influence.reshape(-1)[14 * 28 + 14:]            # the centre pixel and every pixel after it
    print(f"gradient of the centre logit w.r.t. the centre and later pixels: max {after.max():.1e} (must be 0); "
          f"{int((influence > 0).sum())} earlier pixels influence it")
    seen = (influence > 0).astype(np.float32)
    seen[14, 14] = 0.5                                       # mark the predicted pixel in grey
    path = save_rows({"digit": image.data, "what pixel (14, 14) sees": seen[None, None],
                      "|gradient|": (influence / influence.max())[None, None]},
                     os.path.join(args.out, "receptive_field.png"),
                     title="the prediction at the grey pixel depends only on earlier pixels")
    print("figures:", path, f"and the trainer's samples in {os.path.join(args.out, 'pixelcnn')}")


# %%
if __name__ == "__main__":
    main()
