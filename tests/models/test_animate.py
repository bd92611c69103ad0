"""Generation, animated: every family's generation_frames, the GIF writer, the GAN's training
snapshots, and `minigen sample --animate`."""
import os

import numpy as np
import pytest
from PIL import Image

from minigen.animate import Frames, save_gif
from minigen.models.base import animated_families
from minigen.cli import main
from minigen.errors import MinigenError
from minigen.models import get_family
from minigen.models.pixelcnn import pixel_by_pixel_strip
from minigen.random import Generator

TINY = {
    "ddpm": {"channels": [8, 8, 8], "groups": 4, "time_dim": 16, "sample_steps": 3},
    "flowmatch": {"channels": [8, 8, 8], "groups": 4, "time_dim": 16, "sample_steps": 3},
    "pixelcnn": {"channels": 6, "num_blocks": 1, "image_size": 28},
    "vae": {"hidden_dim": 16},
    "flow": {"hidden_dim": 16, "num_couplings": 2},
}


def test_the_animated_families():
    assert animated_families() == ["ddpm", "flow", "flowmatch", "gan", "pixelcnn", "vae"]


@pytest.mark.parametrize("family", sorted(TINY))
@pytest.mark.parametrize("conditional", [False, True])
def test_generation_frames_are_a_row_of_ten_per_frame(family, conditional):
    model = get_family(family)({**TINY[family], "conditional": conditional})
    frames = model.generation_frames(generator=Generator(0), frames=4)
    assert frames.images.shape == (4, 10, 1, 28, 28)
    assert frames.images.min() >= 0 and frames.images.max() <= 1
    assert len(frames.captions) == 4 and len(set(frames.captions)) == 4   # each frame says where it is
    assert frames.columns == (list(range(10)) if conditional else None)


def test_pixelcnn_frames_fill_in_raster_order_and_end_at_the_samples():
    model = get_family("pixelcnn")(TINY["pixelcnn"])
    samples = model.sample(10, generator=Generator(3))
    frames = model.generation_frames(frames=4, samples=samples)
    assert np.array_equal(frames.images[-1], samples) and not frames.images[0].any()
    strip = pixel_by_pixel_strip(samples[0], 3)                  # 0, half, all pixels
    flat = strip.reshape(3, -1)
    assert not flat[0].any() and np.array_equal(flat[1, :392], samples[0].reshape(-1)[:392])
    assert not flat[1, 392:].any() and np.array_equal(flat[2], samples[0].reshape(-1))


def test_ddpm_frames_start_from_noise_and_end_at_the_sample():
    model = get_family("ddpm")({**TINY["ddpm"], "conditional": True})
    frames = model.generation_frames(generator=Generator(1), frames=4)
    final, _ = model.sample_trajectory(10, np.arange(10), Generator(1), 0)
    assert np.allclose(frames.images[-1], final)
    assert frames.images[0].std() > 0.2                            # pure noise (clipped to [0, 1])


def test_flow_sweep_starts_at_the_mode():
    model = get_family("flow")(TINY["flow"])
    frames = model.generation_frames(generator=Generator(0), frames=3)
    mode = model.images_from_latent(np.zeros((10, *model.latent_shape), np.float32))
    assert np.array_equal(frames.images[0], mode)                # temperature 0: z = 0 for every column


def test_gan_keeps_fixed_noise_snapshots_thinned_evenly_and_checkpointed():
    gan = get_family("gan")
    model = gan({"batch_size": 8, "collapse_check_every": 0, "snapshot_every": 1, "snapshot_frames": 4,
                 "conditional": True})
    with pytest.raises(MinigenError, match="no fixed-noise snapshots"):
        model.generation_frames()
    optimizers = model.make_optimizers()
    x = np.random.default_rng(0).random((8, 1, 28, 28)).astype(np.float32)
    for _ in range(2):                                # the training step's hook takes steps 1 and 2
        model.train_step(x, np.arange(8) % 10, optimizers, Generator(0))
    assert list(model.snapshot_steps) == [1, 2]
    assert not np.array_equal(model.snapshots[0], model.snapshots[1])     # the same noise; G changed
    for step in (3, 4, 5, 6):
        model.take_snapshot(step)
    # steps 1..5 -> 5 > 4 frames: thinned to 2, 4 and the interval doubles; step 6 is kept
    assert list(model.snapshot_steps) == [2, 4, 6] and model.snapshot_every == 2
    frames = model.generation_frames()
    assert frames.images.shape == (3, 10, 1, 28, 28) and frames.captions[-1] == "after 6 generator steps"
    restored = gan(model.config)
    restored.load_extra_state(model.extra_state())
    assert np.array_equal(restored.snapshots, model.snapshots) and restored.snapshot_every == 2


def test_save_gif_writes_every_frame(tmp_path):
    images = np.stack([np.full((3, 1, 8, 8), v, np.float32) for v in (0.0, 0.5, 1.0)])
    path = save_gif(Frames(images, ["a", "b", "c"], [0, 1, 2], "title"), tmp_path / "x.gif", hold_last=0)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 3
    assert [p.name for p in tmp_path.iterdir()] == ["x.gif"]          # no temp file left behind
    from minigen.serialize import new_file_mode                        # readable like any new file
    assert os.stat(path).st_mode & 0o777 == new_file_mode()
    with pytest.raises(MinigenError, match="F captions"):
        save_gif(Frames(images, ["a"], None, "t"), tmp_path / "y.gif")


def test_families_without_an_animation_say_which_have_one():
    with pytest.raises(MinigenError, match="nar: nothing to animate; .*ddpm, flow, flowmatch, gan, pixelcnn, vae"):
        get_family("nar")({}).generation_frames()


def test_sample_animate_from_the_command_line(tmp_path, capsys, monkeypatch):
    from minigen.train import TrainOptions, train
    opts = TrainOptions(model="vae", out=str(tmp_path / "vae"), dataset="mnist-5k", epochs=1, train_n=64, eval_n=0,
                        n_samples=0, progress=False, model_config={"hidden_dim": 8, "batch_size": 16})
    train(opts)
    out = tmp_path / "walk.gif"
    assert main(["sample", opts.out, "--animate", str(out)]) == 0
    with Image.open(out) as gif:
        assert gif.n_frames > 10
    capsys.readouterr()
    assert main(["sample", opts.out, "--animate", str(out), "--steps", "3"]) == 2
    assert "--steps is not an option of vae animation" in capsys.readouterr().err
