"""Rich rendering of temtool results (tables, summaries). No science here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from temtool.receptive_field import RFLayer

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def fmt_nm(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rf_table(rows: list[RFLayer], pixel_size_nm: float | None) -> Table:
    t = Table(title="Receptive field, layer by layer (study convention)")
    t.add_column("layer")
    t.add_column("stride px", justify="right")
    t.add_column("RF px", justify="right")
    if pixel_size_nm:
        t.add_column("RF nm", justify="right")
    for r in rows:
        cells = [r.layer, f"{r.stride_px:g}", str(r.rf_px)]
        if pixel_size_nm:
            cells.append(fmt_nm(r.rf_px * pixel_size_nm))
        t.add_row(*cells)
    return t


def summary_table(title: str, data: dict[str, object]) -> Table:
    t = Table(title=title, show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    for k, v in data.items():
        t.add_row(k, str(v))
    return t
