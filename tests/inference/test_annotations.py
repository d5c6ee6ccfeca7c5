"""Burned-in annotations (scale bars, label boxes, data bars) are found exactly and kept out of
the segmentation; recorded micrographs, clipped particles and noise are left alone; a page of
text or a plot is refused, not segmented."""

import json

import numpy as np
import pytest

from temtool.data.simulate import config_for, simulate_image
from temtool.inference.annotations import find_annotations, mask_annotations, text_or_drawing


def _grey8(image: np.ndarray) -> np.ndarray:
    """A micrograph exported as 8-bit, as most annotated ones are."""
    lo, hi = np.percentile(image, [0.1, 99.9])
    return np.clip((image - lo) / (hi - lo) * 255, 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def micrograph():
    return _grey8(simulate_image(config_for("standard", pixel_size_nm=0.5), 128, seed=4).image)


def _burn(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A black label box with white 'text' and a white scale bar drawn in; the drawn pixels."""
    x = x.copy()
    truth = np.zeros(x.shape, bool)
    x[100:120, 60:124] = 0  # the box
    for k in range(4):
        x[104:116, 64 + 14 * k : 72 + 14 * k] = 255  # glyphs on it
    truth[100:120, 60:124] = True
    x[8:12, 80:120] = 255  # a scale bar on the micrograph itself
    truth[8:12, 80:120] = True
    return x, truth


def test_drawn_box_text_and_bar_are_found_exactly(micrograph):
    x, truth = _burn(micrograph)
    assert np.array_equal(find_annotations(x), truth)


def test_recorded_pixels_clipped_particles_and_noise_are_not_annotations(micrograph):
    assert not find_annotations(micrograph).any()
    sim = simulate_image(config_for("standard", pixel_size_nm=0.5), 128, seed=5)
    clipped = np.clip(_grey8(sim.image).astype(int) - 60, 0, 255).astype(np.uint8)  # black cores
    assert (clipped == 0).sum() > 500 and not find_annotations(clipped).any()
    noise = np.random.default_rng(0).normal(100, 10, (128, 128)).round().clip(0, 255)
    assert not find_annotations(noise).any()
    assert not find_annotations(np.random.default_rng(0).random((64, 64)).astype(np.float32)).any()


def test_a_frame_is_found_without_the_micrograph_inside_it(micrograph):
    x = np.pad(micrograph, 6)  # a black frame around the micrograph
    found = find_annotations(x)
    frame = np.ones(x.shape, bool)
    frame[6:-6, 6:-6] = False
    assert np.array_equal(found, frame)


def test_masked_image_hides_the_drawing_from_normalisation(micrograph):
    x, truth = _burn(micrograph)
    filled, found = mask_annotations(x)
    assert np.array_equal(found, truth)
    assert np.all(filled[truth] == np.median(x[~truth]))
    assert np.array_equal(filled[~truth], x[~truth])
    same, none = mask_annotations(micrograph)
    assert same is micrograph and not none.any()


def test_cli_segment_keeps_a_label_box_out_of_the_mask(run_cli, tmp_path, micrograph):
    from PIL import Image

    from temtool.data.io import read_mask

    x, truth = _burn(micrograph)
    Image.fromarray(x).save(tmp_path / "m.png")
    code, out, _ = run_cli("segment", tmp_path / "m.png", "--out", tmp_path / "a", "--json")
    assert code == 0
    r = json.loads(out)["results"][0]
    assert r["annotation_px"] == truth.sum()
    assert any("burned-in annotation" in n for n in r["notes"])
    assert not read_mask(tmp_path / "a" / "m_mask.png").astype(bool)[truth].any()

    code, out, _ = run_cli(
        "segment", tmp_path / "m.png", "--out", tmp_path / "b", "--json", "--keep-annotations"
    )
    r = json.loads(out)["results"][0]
    assert code == 0 and r["annotation_px"] == 0
    assert read_mask(tmp_path / "b" / "m_mask.png")[100:120, 60:124].mean() > 0.5  # the box: a "particle"


def test_bright_particles_with_polarity_bright_give_the_dark_result(run_cli, tmp_path, micrograph):
    """A HAADF-like micrograph (the same one, contrast inverted) with --polarity bright gives
    exactly the mask of the bright-field original; a bad value stops with exit code 2."""
    from PIL import Image

    from temtool.data.io import read_mask

    Image.fromarray(micrograph).save(tmp_path / "bf.png")
    Image.fromarray(255 - micrograph).save(tmp_path / "haadf.png")
    assert run_cli("segment", tmp_path / "bf.png", "--out", tmp_path / "o", "--json")[0] == 0
    code, out, _ = run_cli(
        "segment", tmp_path / "haadf.png", "--out", tmp_path / "o", "--json", "--polarity", "bright"
    )
    assert code == 0 and any("contrast inverted" in n for n in json.loads(out)["results"][0]["notes"])
    dark = read_mask(tmp_path / "o" / "bf_mask.png")
    assert dark.mean() > 0.05
    assert np.array_equal(read_mask(tmp_path / "o" / "haadf_mask.png"), dark)
    code, _, err = run_cli("segment", tmp_path / "bf.png", "--out", tmp_path / "p", "--polarity", "white")
    assert code == 2 and "--polarity" in err and not (tmp_path / "p").exists()


def _page(font_px: int, scale: int = 1) -> np.ndarray:
    """A page of random words (black on white), drawn at ``font_px`` and enlarged ``scale``x."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(0)
    im = Image.new("L", (300, 256), 255)
    draw = ImageDraw.Draw(im)
    for y in range(6, 240, int(font_px * 1.6)):
        words = ["".join(chr(97 + int(c)) for c in rng.integers(0, 26, rng.integers(2, 8))) for _ in range(6)]
        draw.text((6, y), " ".join(words), fill=0, font=ImageFont.load_default(size=font_px))
    return np.asarray(im.resize((300 * scale, 256 * scale), Image.NEAREST))


def _plot() -> np.ndarray:
    """Axes, a curve and tick labels."""
    from PIL import Image, ImageDraw

    im = Image.new("L", (320, 256), 255)
    draw = ImageDraw.Draw(im)
    draw.line([(30, 10), (30, 220), (310, 220)], fill=0, width=2)
    xs = np.linspace(30, 310, 200)
    draw.line(list(zip(xs, 120 + 60 * np.sin(xs / 30))), fill=0, width=2)
    for k in range(6):
        draw.text((30 + 50 * k, 228), str(10 * k), fill=0)
    return np.asarray(im)


@pytest.mark.parametrize("font_px,scale", [(10, 1), (24, 1), (10, 3)])
def test_pages_of_text_are_recognised(font_px, scale):
    why = text_or_drawing(_page(font_px, scale))
    assert why is not None and "strokes" in why


def test_a_plot_is_recognised():
    assert text_or_drawing(_plot()) is not None


def test_micrographs_and_solid_particles_on_flat_backgrounds_are_not_text(micrograph):
    assert text_or_drawing(micrograph) is None
    assert text_or_drawing(_burn(micrograph)[0]) is None  # annotated, still a micrograph
    yy, xx = np.mgrid[:256, :256]
    rng = np.random.default_rng(1)
    atoms = np.zeros((256, 256), np.uint8)  # small bright atoms on flat black vacuum (HAADF)
    for cy, cx in rng.integers(0, 256, (150, 2)):
        atoms[(yy - cy) ** 2 + (xx - cx) ** 2 <= 6] = 200
    assert text_or_drawing(atoms) is None
    spheres = np.full((256, 256), 230, np.uint8)  # large particles on a processed white background
    for cy, cx in ((60, 60), (60, 190), (180, 120)):
        spheres[(yy - cy) ** 2 + (xx - cx) ** 2 <= 45**2] = 20
    assert text_or_drawing(spheres) is None


def test_cli_refuses_a_page_of_text_unless_annotations_are_kept(run_cli, tmp_path):
    from PIL import Image

    Image.fromarray(_page(10)).save(tmp_path / "legend.png")
    code, out, err = run_cli("segment", tmp_path / "legend.png", "--out", tmp_path / "a")
    assert code == 2
    line = (out + err).strip()
    assert "legend.png" in line and "text or a line drawing" in line and "--keep-annotations" in line
    assert "Traceback" not in line
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
    code, _, _ = run_cli(
        "segment",
        tmp_path / "legend.png",
        "--out",
        tmp_path / "b",
        "--keep-annotations",
        "--polarity",
        "dark",
    )
    assert code == 0 and (tmp_path / "b" / "legend_mask.png").exists()
