"""``effigy kvquant ...``: PM-KVQ's calibrate / generate workflow (``kvquant bench`` = ``bench kvquant``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from effigy.cli import bench
from effigy.cli._common import JSON, command_line, console, echo_json, positive, progress, writable_file
from effigy.errors import EffigyError

app = typer.Typer(help="PM-KVQ: progressive mixed-precision KV cache for long generation (any causal LM; "
                  "SmolLM2-135M ships).", no_args_is_help=True)
MODEL_HELP = "Causal LM: smollm2 (shipped), a .gguf file or a local transformers folder."
app.command("bench")(bench.bench_kvquant)


@app.command("calibrate")
def kv_calibrate(
    budget_mb: float = typer.Option(..., callback=positive,
                                    help="Main KV-cache memory for all layers at the target length (MiB)."),
    target_length: int = typer.Option(2048, min=16, max=1048576, help="Sequence length the budget is planned for."),
    out: Path = typer.Option(Path("kv_allocation.json")),
    sequences: int = typer.Option(4, min=1, max=6, help="Calibration sequences (FP answers to calibration prompts)."),
    length: int = typer.Option(256, min=16, max=131072, help="Tokens per calibration sequence."),
    interpolate: bool = typer.Option(True, help="Stretch calibration positions to the target length."),
    group_size: int = typer.Option(32, min=2, max=1024, help="KV elements per scale (a divisor of head_dim)."),
    model_name: str = typer.Option("smollm2", "--model", help=MODEL_HELP),
    as_json: bool = JSON,
) -> None:
    """Per-layer KV sensitivity (gradient-weighted) and the block-wise width allocation for a budget."""
    from effigy.workflows.kvquant import calibrate_allocation

    writable_file(out)
    with progress(not as_json) as reporter:
        widths = calibrate_allocation(model_name, budget_mb, target_length, out, sequences, length, interpolate,
                                      group_size, reporter, command_line())
    if as_json:
        echo_json({"allocation": widths, "out": str(out)})
    else:
        console.print(f"widths per layer: {widths}; wrote {out}")


class TokensSoFar:
    """A transformers streamer that keeps the new tokens as they come (the prompt, sent first, is skipped)."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.tokens += value.reshape(-1).tolist()

    def end(self) -> None:
        pass


@app.command("generate")
def kv_generate(
    prompt: str = typer.Option(..., help="User message (through the model's chat template, where it has one)."),
    budget_mb: float = typer.Option(4.0, callback=positive,
                                    help="Main KV-cache memory for all layers (MiB)."),
    allocation: Optional[Path] = typer.Option(None, help="kv_allocation.json from `effigy kvquant calibrate`."),
    max_new_tokens: int = typer.Option(256, min=1, max=131072),
    window: int = typer.Option(128, min=0, max=131072),
    model_name: str = typer.Option("smollm2", "--model", help=MODEL_HELP),
    as_json: bool = JSON,
) -> None:
    """Greedy generation with the progressive mixed-precision cache; prints text, bytes and widths."""
    from effigy.workflows.kvquant import generate

    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise EffigyError("--prompt is not valid UTF-8 text; pass the message as UTF-8.") from None
    summary = generate(model_name, prompt, budget_mb, allocation, max_new_tokens, window, TokensSoFar(),
                       typer.echo)  # what was generated before the budget ran out is not lost
    text, seconds = summary["text"], summary["seconds"]
    if as_json:
        echo_json(summary)
        return
    typer.echo(text)
    console.print(f"{summary['tokens']} tokens in {seconds:.1f} s; KV bytes held {summary['kv_bytes_held']:,} "
                  f"(counted {summary['kv_bytes_counted']:,}); widths {summary['widths']}")
