"""`vestis eval`: retrieval quality within a collection, in words, and across collections."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vestis.cli.common import CollectionOpt, advance, app, console, fail, finite


@app.command("eval")
def eval_cmd(
    collection: CollectionOpt,
    group: Annotated[str | None, typer.Option(help="Label columns that define relevance, e.g. articleType,baseColour.")] = None,
    attributes: Annotated[str | None, typer.Option(
        "--attributes", "--attribute", help="Attribute-specific MAP over these columns (one or more).")] = None,
    k: Annotated[str, typer.Option("--k", help="Cut-offs, comma-separated.")] = "1,10,50",
    split: Annotated[str | None, typer.Option(help="Split of the queries (train/val/test; default: all items).")] = None,
    gallery: Annotated[str | None, typer.Option(help="Splits of the gallery, comma-separated (default: all).")] = None,
    split_file: Annotated[Path | None, typer.Option(help="CSV of id,split (default: created by id, seed 0).")] = None,
    index: Annotated[str, typer.Option(help="Rank through the store's search: exact, collection (its own ANN index, "
                                       "as searches use it) or a spec built as `vestis index --index SPEC` "
                                       "builds it; any but exact adds ANN recall@10.")] = "exact",
    color_weight: Annotated[float, typer.Option("--color-weight", help="Fuse colour similarity with this weight.",
                                                callback=finite)] = 0.0,
    knn: Annotated[int | None, typer.Option(help="Also report kNN classification accuracy with this K.")] = None,
    skip_unanswerable: Annotated[
        bool, typer.Option(help="Leave out queries with no relevant item (default: they count as misses).")
    ] = False,
    report: Annotated[Path | None, typer.Option(help="Write report.md, metrics.json and plots here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
    text: Annotated[bool, typer.Option("--text", help="Text-query protocols (needs a joint text-image model): "
                                       "title retrieval, label queries, composed queries, latency.")] = False,
    transfer: Annotated[Path | None, typer.Option(help="With --text: also query this collection's photos.")] = None,
    shop_queries: Annotated[Path | None, typer.Option(help="With --text: also score these shop-word queries "
                                                      "(benchmarks/text_shop_queries.tsv), rewriting on and off.")] = None,
    min_items: Annotated[int, typer.Option(help="With --text: label pairs with at least this many items are queried.",
                                           min=1)] = 5,
    query_collection: Annotated[str | None, typer.Option(
        "--query-collection", help="Query with this collection's items (e.g. street photos) against --collection "
        "as the gallery; needs --label-map.")] = None,
    label_map: Annotated[Path | None, typer.Option(
        help="With --query-collection: which gallery label values match each query label value (YAML; see "
        "configs/street-to-shop/).")] = None,
    region: Annotated[str, typer.Option(
        help="With --query-collection: also search this garment region of each query photo (top, bottom, shoes, "
        "person), reported beside the whole photo with the change and its 95% interval.")] = "none",
    region_scope: Annotated[bool, typer.Option("--region-scope/--no-region-scope", help=(
        "With --region: search the region's part of the catalogue where its labels name it."))] = True,
    limit: Annotated[int | None, typer.Option(help="With --query-collection: the first N queries only.", min=1)] = None,
) -> None:
    """Measure retrieval quality: mAP@K, P@K, R@K, NDCG@K, attribute MAP, kNN accuracy; text queries;
    one collection's items against another (street to shop)."""
    from vestis.eval.run import EvalConfig, run_eval

    if query_collection is not None:
        _eval_across(collection, query_collection, label_map, region, region_scope, k, limit, as_json, report)
        return

    if text:
        from vestis.eval.text import TextEvalConfig, run_text_eval

        text_cfg = TextEvalConfig(split_file=split_file, transfer=transfer, min_items=min_items,
                                  shop_queries=shop_queries)
        if group:
            text_cfg.group = [c.strip() for c in group.split(",") if c.strip()]
        metrics = run_text_eval(collection, text_cfg, report_dir=report, command="vestis " + " ".join(sys.argv[1:]),
                                progress=lambda msg: console.print(f"[dim]{msg}[/]"))
        print(json.dumps(metrics, indent=2, default=str))
        return
    try:
        ks = sorted({int(x) for x in k.split(",") if x.strip()})
    except ValueError:
        fail(f"--k takes comma-separated integers (got {k!r})")
    split_list = lambda text: [c.strip() for c in text.split(",") if c.strip()] if text else []  # noqa: E731
    cfg = EvalConfig(
        group=split_list(group), attributes=split_list(attributes), ks=ks, queries=split,
        gallery=split_list(gallery) or None, split_file=split_file, index=index, colour_weight=color_weight,
        knn=knn, include_queries_without_relevant=not skip_unanswerable,
    )
    command = "vestis " + " ".join(sys.argv[1:])
    metrics = run_eval(collection, cfg, report_dir=report, command=command)
    if as_json:
        print(json.dumps(metrics, indent=2, default=str))
        return
    table = Table(title=f"{collection} ({metrics['n_queries_total']} queries, gallery {metrics['n_gallery']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
        elif key.startswith(("n_", "attribute_n")) or key in ("index", "encoder"):
            table.add_row(key, str(value))
    for attr, res in metrics.get("attributes", {}).items():
        table.add_row(f"MAP {attr}", f"{res['mAP']:.4f} ({res['n_queries']} queries)")
    Console().print(table)
    if report is not None:
        console.print(f"report written to {report / 'report.md'}")


def _eval_across(gallery: str, queries: str, label_map: Path | None, region: str, region_scope: bool, k: str,
                 limit: int | None, as_json: bool, report: Path | None) -> None:
    from tqdm import tqdm

    from vestis.eval.cross import CrossConfig, evaluate_across

    if label_map is None:
        fail("--query-collection needs --label-map (which gallery labels match each query label)")
    try:
        ks = sorted({int(x) for x in k.split(",") if x.strip()})
    except ValueError:
        fail(f"--k takes comma-separated integers (got {k!r})")
    with tqdm(unit="query", desc="street to shop", disable=True if as_json else None) as bar:
        metrics = evaluate_across(gallery, queries, CrossConfig(label_map, region, region_scope, ks, limit),
                                  progress=lambda done, total: advance(bar, done, total))
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        (report / "metrics.json").write_text(json.dumps({**metrics, "command": "vestis " + " ".join(sys.argv[1:])},
                                                        indent=2, default=str))
    if as_json:
        print(json.dumps(metrics, indent=2, default=str))
        return
    modes = [m for m in ("whole", region) if m in metrics]
    table = Table(title=f"{queries} -> {gallery} ({metrics['n_queries']} queries, gallery {metrics['n_gallery']})")
    table.add_column("metric")
    for mode in modes:
        table.add_column("whole photo" if mode == "whole" else f"{mode} region", justify="right")
    for key in [f"{m}@{x}" for m in ("P", "R", "mAP") for x in ks] + ["query_ms_p50"]:
        table.add_row(key, *(f"{metrics[mode][key]:.4f}" for mode in modes))
    Console().print(table)
    for metric in ("P@10", "mAP@10"):
        if f"{metric}_change" in metrics:
            low, high = metrics[f"{metric}_change_ci95"]
            console.print(f"{metric}: {metrics[f'{metric}_change']:+.1%} with the {region} region "
                          f"(95% CI {low:+.1%} to {high:+.1%}); {metrics['searched_whole']} photo(s) searched whole")

