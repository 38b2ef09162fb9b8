"""The Gradio layout of ``rlsyn-trl inspect``: one page over a synthetic dataset, local only.

The data (which rows, in which order, which real photo each flagged sample is paired with) comes from ``data.py``;
this module only arranges it. The server binds 127.0.0.1 unless told otherwise, makes no share link and has
Gradio's analytics switched off before Gradio is imported: the private photos and samples never leave the machine.
"""

from __future__ import annotations

import base64
import html
import inspect as pyinspect
import io
import os
from typing import Any

from PIL import Image

from .data import (
    FLAG_COLUMNS,
    SCORE_COLUMNS,
    TABLE_COLUMNS,
    Inspection,
    NearestPair,
    identity_names,
    nearest_pairs,
    real_photos,
    sample_caption,
    score_table,
    select_samples,
    summary_markdown,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
PAIR_SIZE = 112  # display size of the paired images; small samples are scaled up with visible pixels
ANY_IDENTITY = "(all identities)"


def import_gradio():
    """Gradio with its analytics off (set before the import, as Gradio reads it then), or a clear error."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError as error:
        raise ImportError(
            "rlsyn-trl inspect needs Gradio: pip install 'rlsyn-trl[app]' (or pip install 'gradio>=5')."
        ) from error
    return gradio


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _img(image: Image.Image, alt: str) -> str:
    style = f"width:{PAIR_SIZE}px;height:{PAIR_SIZE}px;image-rendering:pixelated;object-fit:contain"
    return f'<img src="{_data_uri(image)}" alt="{html.escape(alt)}" style="{style}">'


def pairs_html(inspection: Inspection, pairs: list[NearestPair]) -> str:
    """A table: each flagged sample, the real image it resembles, the space, the distance and the threshold."""
    if not pairs:
        return "<p>No flagged sample among the samples shown.</p>"
    if inspection.real is None:
        return "<p>Flagged samples are shown above; the real split is unavailable, so no pair can be drawn.</p>"
    rows = []
    for pair in pairs:
        sample = inspection.samples[pair.sample_row]
        real = inspection.real[pair.real_row]["image"]
        threshold = "n/a" if pair.threshold is None else f"{pair.threshold:.4f}"
        verdict = "&lt;" if pair.threshold is not None and pair.distance < pair.threshold else "vs"
        sample_id = sample.get("sample_id")
        rows.append(
            "<tr>"
            f"<td>{_img(sample['image'], f'sample {sample_id}')}</td>"
            f"<td>{_img(real, f'nearest real, train row {pair.real_row}')}</td>"
            f"<td>sample #{sample_id} ({html.escape(pair.identity)})<br>"
            f"nearest real: {html.escape(str(pair.real_identity))}, train row {pair.real_row}<br>"
            f"<b>{pair.space} distance {pair.distance:.4f} {verdict} threshold {threshold}</b></td>"
            "</tr>"
        )
    header = "<tr><th>flagged sample</th><th>nearest real training image</th><th>audit</th></tr>"
    return f'<table class="nn-pairs">{header}{"".join(rows)}</table>'


def _bound(value: str | float | None, name: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"The {name} of the score filter must be a number or blank, got {value!r}.") from None


def dataset_view(
    inspection: Inspection,
    identity: str,
    sort_by: str,
    descending: bool,
    flagged_only: bool,
    range_column: str | None,
    low: str | float | None,
    high: str | float | None,
    consistent_only: bool,
    faces_only: bool,
) -> tuple[list, list, str, list, str]:
    """Everything the dataset tab shows for one setting of its controls: real photos, samples, a count line, the
    samples' scores and the flagged pairs. ``low`` / ``high`` bound ``range_column``; blank means open."""
    chosen = None if identity in (None, ANY_IDENTITY) else identity
    low, high = _bound(low, "min"), _bound(high, "max")
    flags = {"identity_consistent": True} if consistent_only else {}
    if faces_only:
        flags["face_detected"] = True
    ranges = {range_column: (low, high)} if range_column and (low is not None or high is not None) else None
    rows = select_samples(inspection.samples, chosen, sort_by, descending, flagged_only, ranges, flags)
    samples = [(inspection.samples[row]["image"], sample_caption(inspection.samples[row])) for row in rows]
    real = real_photos(inspection, chosen) if chosen else []
    count = f"{len(rows)} sample(s) shown, sorted by `{sort_by}` ({'descending' if descending else 'ascending'})."
    table = score_table(inspection.samples, rows)
    return real, samples, count, table, pairs_html(inspection, nearest_pairs(inspection, rows))


def _sampler(generator: Any, steps: int, guidance_scale: float):
    from ..data import tensor_to_pil

    def sample(identity: str, seed: float, count: float) -> list:
        images = generator.sample(
            [identity] * int(count), seed=int(seed), num_inference_steps=steps, guidance_scale=guidance_scale
        )
        return [(image, f"{identity}, seed {int(seed)}, #{i}") for i, image in enumerate(tensor_to_pil(images))]

    return sample


def build_app(inspection: Inspection, generator: Any = None, steps: int = 50, guidance_scale: float = 1.5):
    """The Blocks app; ``generator`` (an :class:`~rlsyn_trl.generators.IdentityGenerator`) adds a sampling tab."""
    gr = import_gradio()
    identities = identity_names(inspection)
    theme = gr.themes.Base(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web-font downloads
    blocks_options = {"title": "rlsyn-trl inspect"}
    if "theme" in pyinspect.signature(gr.Blocks.__init__).parameters and not _theme_at_launch(gr):
        blocks_options["theme"] = theme
    gallery = {"columns": 8, "height": 260, "object_fit": "contain", "format": "png"}
    if "fit_columns" in pyinspect.signature(gr.Gallery.__init__).parameters:
        gallery["fit_columns"] = False  # a few images keep thumbnail size instead of filling the row
    with gr.Blocks(**blocks_options) as demo:
        gr.Markdown(summary_markdown(inspection), elem_id="summary")
        with gr.Tab("Dataset"):
            with gr.Row():
                identity = gr.Dropdown(identities, value=identities[0], label="Identity", elem_id="identity")
                sort_by = gr.Dropdown(list(SCORE_COLUMNS + FLAG_COLUMNS), value="reward", label="Sort by")
                descending = gr.Checkbox(value=True, label="Descending")
                flagged_only = gr.Checkbox(value=False, label="Flagged only", elem_id="flagged-only")
            with gr.Row():
                range_column = gr.Dropdown(list(SCORE_COLUMNS), value="reward", label="Filter score")
                low = gr.Textbox(value="", label="min", placeholder="any")
                high = gr.Textbox(value="", label="max", placeholder="any")
                consistent_only = gr.Checkbox(value=False, label="Identity consistent only")
                faces_only = gr.Checkbox(value=False, label="Face detected only")
            real = gr.Gallery(label="Real training photos", elem_id="real-photos", **gallery)
            count = gr.Markdown(elem_id="count")
            samples = gr.Gallery(label="Synthetic samples", elem_id="samples", **gallery)
            scores = gr.Dataframe(headers=list(TABLE_COLUMNS), interactive=False, elem_id="scores", wrap=True)
            gr.Markdown("#### Flagged samples beside their nearest real training image")
            pairs = gr.HTML(elem_id="pairs")
            controls = [identity, sort_by, descending, flagged_only, range_column, low, high, consistent_only]
            controls.append(faces_only)

            def update(*values):
                return dataset_view(inspection, *values)

            for control in controls:
                control.change(update, controls, [real, samples, count, scores, pairs])
            demo.load(update, controls, [real, samples, count, scores, pairs])
        if generator is not None:
            with gr.Tab("Sample from the adapter"):
                with gr.Row():
                    sample_identity = gr.Dropdown(generator.label_names, value=identities[0], label="Identity")
                    seed = gr.Number(value=0, precision=0, label="Seed")
                    how_many = gr.Slider(1, 16, value=4, step=1, label="Images")
                    button = gr.Button("Sample")
                drawn = gr.Gallery(label="New samples", elem_id="new-samples", **gallery)
                button.click(_sampler(generator, steps, guidance_scale), [sample_identity, seed, how_many], drawn)
    demo.rlsyn_theme = theme
    return demo


def _theme_at_launch(gr) -> bool:
    """Gradio 6 takes the theme in ``launch``; Gradio 5 in ``Blocks``."""
    return "theme" in pyinspect.signature(gr.Blocks.launch).parameters


def check_port_free(host: str, port: int | None) -> None:
    """Refuse a port another server holds, before any data is loaded (Gradio found out only after printing the
    address, with its own advice); the message offers a port that is free now."""
    import socket

    if port is None:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
            return
        except OSError:
            pass
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as spare:
        spare.bind((host, 0))
        free = spare.getsockname()[1]
    raise ValueError(
        f"Port {port} on {host} is in use (another app, or an earlier `rlsyn-trl inspect` still running): pass "
        f"--port {free} (free now) or stop the other server."
    )


def launch(demo, host: str = DEFAULT_HOST, port: int | None = DEFAULT_PORT, block: bool = True):
    """Serve ``demo`` on ``host:port``: no share link, no browser opened, no server-side rendering (no Node)."""
    gr = import_gradio()
    options = {"theme": demo.rlsyn_theme} if _theme_at_launch(gr) else {}
    parameters = pyinspect.signature(gr.Blocks.launch).parameters
    if "footer_links" in parameters:  # no "Use via API" link: the page is for looking, not a service
        options["footer_links"] = ["gradio", "settings"]
    elif "show_api" in parameters:
        options["show_api"] = False
    return demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        ssr_mode=False,
        quiet=True,
        **options,
    )
