"""Files for a text-to-image evaluation: per-prompt JSON, a Markdown summary, a prompt/image grid."""
from __future__ import annotations

import textwrap
from pathlib import Path

import torch

from effigy.evaluate.report import markdown_table, write_results


def write_t2i_report(result: dict, settings: dict, directory: Path, command: str, grid: bool) -> dict[str, Path]:
    stem = f"t2i_{settings['model']}_{settings['split']}_steps{settings['steps']}"
    summary_rows = [{"metric": k, "value": v} for k, v in result["summary"].items()]
    markdown = "\n".join([
        f"# Text-to-image evaluation: {settings['model']}", "",
        f"Command: `{command}` (seed {settings['seed']})  ",
        f"{settings['prompts']} {settings['split']} prompts, {settings['steps']} steps, CFG {settings['guidance']}. "
        "Adherence: fraction of caption facts the attribute checker reads back; CLIP score: 100 x cosine in the "
        "EfficientNet-Lite0 / MiniLM aligned space; FID on shapes-checker features against renders of the same scenes.",
        "", markdown_table(summary_rows, [("metric", "metric"), ("value", "value")]), "",
        "## Per prompt", "",
        markdown_table(result["rows"], [("caption", "caption"), ("kind", "kind"), ("adherence", "adherence"),
                                        ("clip_score", "CLIP score")]),
    ])
    payload = {"command": command, "settings": settings, "summary": result["summary"], "rows": result["rows"]}
    json_path, md_path = write_results(payload, markdown, directory, stem)
    paths = {"json": json_path, "markdown": md_path}
    if grid:
        paths["grid"] = captioned_grid(result["scenes"], result["images"], directory / f"{stem}_grid.png")
    return paths


def captioned_grid(scenes, images: torch.Tensor, path: Path, columns: int = 6, scale: int = 4) -> Path:
    """Each generated image above its prompt (wrapped), up to 24 prompts."""
    from PIL import Image, ImageDraw

    count = min(len(scenes), 24)
    cell_w, cell_h, text_h = 32 * scale + 40, 32 * scale, 40
    rows = -(-count // columns)
    canvas = Image.new("RGB", (columns * cell_w, rows * (cell_h + text_h)), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(count):
        r, c = divmod(i, columns)
        left, top = c * cell_w, r * (cell_h + text_h)
        array = ((images[i].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        canvas.paste(Image.fromarray(array).resize((cell_h, cell_h), Image.NEAREST), (left + 20, top))
        for j, line in enumerate(textwrap.wrap(scenes[i].caption, 26)[:3]):
            draw.text((left + 4, top + cell_h + 2 + 12 * j), line, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


SCORER_COLUMNS = [("variant", "variant"), ("kind", "kind"), ("adherence", "adherence"), ("clip_score", "CLIP score"),
                  ("adherence_single", "single"), ("adherence_relation", "relation"), ("adherence_count", "count")]


def render_scorer_agreement(result: dict) -> str:
    """Markdown for ``effigy bench t2i-scorers``: the Kendall taus and one row per degraded variant."""
    return (f"# Scorer agreement on t2i-shapes\n\nCommand: `{result['command']}` (seed {result['seed']})  \n"
            f"{result['prompts']} held-out prompts per variant. Kendall tau between mean adherence and mean CLIP "
            "score across the model variants (fewer steps, weaker guidance, weight noise; reference included): "
            f"**{result['kendall_tau']:.3f}** (p = {result['p_value']:.2g}). With the image corruptions (pixel "
            "noise on finished samples, which the attribute checker reads through by design) as well: "
            f"{result['kendall_tau_all']:.3f} (p = {result['p_value_all']:.2g}). Weight noise: seeded Gaussian "
            "noise of the given fraction of each output channel's weight RMS on every layer the quantization "
            "recipes quantize.\n\n" + markdown_table(result["rows"], SCORER_COLUMNS))
