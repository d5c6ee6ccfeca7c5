"""Write one picture per simulated regime (image | mask | FFT) so you can see what the
generator makes.

    python examples/show_simulated.py [OUT_DIR]
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from temtool.data.dataset import STUDY_HRTEM_NM_PER_PX, STUDY_STANDARD_NM_PER_PX  # noqa: E402
from temtool.data.simulate import config_for, simulate_image  # noqa: E402

# the study's geometry: 20 nm Au at 0.124 nm/px, 5 nm Au at 0.02152 nm/px, 512x512
STUDY = {
    "standard": {"pixel_size_nm": STUDY_STANDARD_NM_PER_PX, "diameter_nm": 20.0},
    "hrtem": {"pixel_size_nm": STUDY_HRTEM_NM_PER_PX, "diameter_nm": 5.0},
}


def main(out_dir: str = "examples/figures") -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for regime in ("standard", "hrtem"):
        cfg = config_for(regime, **STUDY[regime])
        for seed in range(100):  # the first image showing three particles or more (HRTEM:
            sim = simulate_image(cfg, 512, seed)  # of at least two fringe classes)
            kinds = {p.get("fringe_class") for p in sim.particles}
            if len(sim.particles) >= 3 and (regime == "standard" or len(kinds) >= 2):
                break
        fft = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(sim.image - sim.image.mean()))))
        fig, ax = plt.subplots(1, 3, figsize=(12, 4.2))
        extent_nm = 512 * cfg.pixel_size_nm
        ax[0].imshow(sim.image, cmap="gray", extent=(0, extent_nm, extent_nm, 0))
        ax[0].set_title(f"{regime}: {cfg.pixel_size_nm} nm/px")
        ax[0].set_xlabel("nm")
        ax[1].imshow(sim.mask, cmap="magma", extent=(0, extent_nm, extent_nm, 0))
        states = ", ".join(sorted({p.get("fringe_class", p["state"]) for p in sim.particles}))
        ax[1].set_title(f"exact mask ({len(sim.particles)} particles: {states})", fontsize=9)
        kmax = 0.5 / cfg.pixel_size_nm
        ax[2].imshow(fft, cmap="gray", extent=(-kmax, kmax, kmax, -kmax))
        ax[2].set_title("|FFT| (1/nm)")
        fig.tight_layout()
        path = out / f"simulated_{regime}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        print(path)


if __name__ == "__main__":
    main(*sys.argv[1:])
