"""REPORT.md for a suite run: the environment, each table, and the plots embedded."""
from __future__ import annotations

from pathlib import Path

from . import tables


def write(folder: Path, env: dict, membw: dict, sections: list[dict]) -> Path:
    lines = ["# ringps benchmark report", "",
             f"{env['ranks']} ranks on {env['nodes']} node(s) of `{env['host']}`: {env['cpu']}, "
             f"{env['cores']} cores; {env['mpi_library']}; torch {env['versions'].get('torch')}.",
             "", f"Memory bandwidth (all ranks at once): copy {membw['copy_GBps_all_ranks']} GB/s, "
             f"add {membw['add_GBps_all_ranks']} GB/s; the ceiling for intra-node collectives.",
             ""]
    for section in sections:
        lines += [f"## {section['title']}", "", section.get("text", ""), ""]
        if section.get("rows") and "collective" in section["rows"][0] and not section.get("table"):
            lines += [tables.markdown(section["rows"]), ""]
        if section.get("table"):
            lines += [tables.markdown_table(*section["table"]), ""]
        for image in section.get("images", []):
            lines += [f"![{section['title']}]({Path(image).name})", ""]
        if section.get("after"):
            lines += [section["after"], ""]
    path = folder / "REPORT.md"
    path.write_text("\n".join(lines))
    return path
