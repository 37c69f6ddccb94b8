"""`eul train`, `eul unlearn` and `eul evaluate`: the base model, one unlearning layer per
forget request, and the metrics of a model with its layers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from eul.cli.args import (
    CliError,
    layer_dir,
    model_dir,
    positive_float,
    positive_int,
    writable_path,
)
from eul.cli.common import (
    add_data_options,
    add_device_option,
    add_forget_options,
    forget_split,
    load_data,
    torch_device,
)

# -- commands -----------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> None:
    from eul.data.records import LABEL_WORDS
    from eul.model.text_model import ModelSpec, TextModel
    from eul.model.training import TrainConfig, train_full

    device = torch_device(args)
    if args.init:
        model_dir(args.init, "--init")
    elif args.d_model % args.heads:
        raise CliError(
            f"--d-model {args.d_model} is not a multiple of --heads {args.heads}; "
            "each head gets d_model / heads dimensions"
        )
    writable_path(args.out, "--out", folder=True)
    records = load_data(args.data, args)
    if args.init:
        tm = TextModel.load(args.init)
    else:
        spec = ModelSpec(
            family=args.family,
            d_model=args.d_model,
            num_layers=args.layers,
            num_heads=args.heads,
            d_ff=args.d_ff,
            vocab_size=args.vocab,
            max_input_len=args.max_input_len or (160 if args.task == "generation" else 64),
            max_target_len=args.max_target_len or (48 if args.task == "generation" else 8),
        )
        texts = [r.text for r in records] + [r.target for r in records] + list(LABEL_WORDS)
        tm = TextModel.create(texts, spec, seed=args.seed)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    tm.to(device)
    stats = train_full(tm, records, config, desc="train base model", progress=not args.quiet)
    tm.save(args.out)
    n_params = sum(p.numel() for p in tm.model.parameters())
    print(
        f"trained a {tm.model.config.model_type} model ({n_params:,} parameters) on "
        f"{len(records)} records for {config.epochs} epochs, final loss "
        f"{stats['final_loss']:.4f}; saved to {args.out}"
    )


def cmd_unlearn(args: argparse.Namespace) -> None:
    import time

    from eul.data.records import DataError
    from eul.fusion.statistics import save_request_statistics
    from eul.layers import LayerConfig
    from eul.methods import EULConfig, ForgetTask, get_method
    from eul.model.text_model import TextModel

    device = torch_device(args)
    model_dir(args.model)
    writable_path(args.out, "--out", folder=True)
    records = load_data(args.data, args)
    forget, retained = forget_split(records, args)
    heldout = load_data(args.heldout, args, "--heldout") if args.heldout else []
    if not retained:
        raise DataError("nothing would be retained: the request names every record")
    tm = TextModel.load(args.model).to(device)
    config = EULConfig(
        objective=args.objective,
        reference=args.reference,
        epochs=args.epochs,
        lr=args.lr,
        retained_sample=args.retained_sample,
        layer=LayerConfig(width=args.width, basis=args.basis),
        seed=args.seed,
    )
    name = args.name or Path(args.out).name
    task = ForgetTask(forget=forget, retained=retained, heldout=heldout, name=name)
    started = time.perf_counter()
    result = get_method("eul", config=config).run(tm, task, progress=not args.quiet)
    folder = tm.unlearning_layers().save_layer(name, args.out)
    save_request_statistics(tm, name, forget, folder)
    history = {
        "forget_records": len(forget),
        "reference": config.reference,
        "update_s": result.update_s,
        "history": result.history,
    }
    (folder / "training.json").write_text(json.dumps(history, indent=2))
    print(
        f"unlearned {len(forget)} records in {time.perf_counter() - started:.1f} s "
        f"({len(result.history)} epochs, {result.trainable_share:.2%} of parameters trained); "
        f"layer saved to {folder}"
    )


def _print_metrics(metrics: dict) -> None:
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {shown}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from eul.evaluate.metrics import EvalSets, evaluate, write_json
    from eul.model.text_model import TextModel

    device = torch_device(args)
    model_dir(args.model)
    if args.oracle:
        model_dir(args.oracle, "--oracle")
    for folder in args.layer or []:
        layer_dir(folder)
    if args.out:
        writable_path(args.out, "--out")
    records = load_data(args.data, args)
    forget, retained = forget_split(records, args)
    test = load_data(args.test, args, "--test")
    unseen = load_data(args.heldout, args, "--heldout") if args.heldout else test
    sets = EvalSets(test=test, retained=retained, forget=forget, unseen=unseen)
    oracle_losses = None
    if args.oracle:
        oracle = TextModel.load(args.oracle).to(device)
        _, oracle_losses = evaluate(oracle, sets, task=args.task)
    tm = TextModel.load(args.model).to(device)
    if args.layer:
        layers = tm.unlearning_layers()
        layers.set_active([layers.load_layer(folder) for folder in args.layer])
    metrics, _ = evaluate(tm, sets, task=args.task, oracle_forget_losses=oracle_losses)
    shown = f"{args.model}" + (f" + {len(args.layer)} layer(s)" if args.layer else "")
    print(f"evaluation of {shown} ({len(forget)} forget records):")
    _print_metrics(metrics)
    if args.out:
        from eul.runtime.jsonsafe import clean_json

        write_json(clean_json(metrics), args.out)
        print(f"written to {args.out}")


# -- parser -------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add `eul train`, `eul unlearn` and `eul evaluate` to the `eul` command line."""
    _declare_train(subparsers)
    _declare_unlearn(subparsers)
    _declare_evaluate(subparsers)


def _declare_train(subparsers: Any) -> None:
    """`eul train`."""
    train = subparsers.add_parser(
        "train",
        help="train the base model (or continue a checkpoint with --init)",
        description="Train a small model from scratch (tokenizer trained on the data), or "
        "continue training a Hugging Face checkpoint folder given with --init.",
    )
    train.add_argument("--data", required=True, help="training records (.jsonl/.csv/.tsv/.parquet)")
    train.add_argument("--out", required=True, help="folder to save the model to")
    train.add_argument("--init", help="start from this checkpoint folder instead of a new model")
    train.add_argument(
        "--family", choices=("t5", "gpt2"), default="t5", help="encoder-decoder or decoder-only"
    )
    train.add_argument("--d-model", type=positive_int, default=128, help="hidden size")
    train.add_argument("--layers", type=positive_int, default=2, help="blocks per stack")
    train.add_argument(
        "--heads", type=positive_int, default=4, help="attention heads (must divide --d-model)"
    )
    train.add_argument("--d-ff", type=positive_int, default=512, help="feed-forward size")
    train.add_argument("--vocab", type=positive_int, default=4000, help="tokenizer vocabulary")
    train.add_argument(
        "--max-input-len", type=positive_int, help="tokens (default: 64; 160 for generation)"
    )
    train.add_argument(
        "--max-target-len", type=positive_int, help="tokens (default: 8; 48 for generation)"
    )
    train.add_argument("--epochs", type=positive_int, default=12, help="passes over the data")
    train.add_argument("--batch-size", type=positive_int, default=64, help="records per step")
    train.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate")
    train.add_argument("--seed", type=int, default=0, help="random seed")
    add_device_option(train)
    add_data_options(train)
    train.set_defaults(func=cmd_train)


def _declare_unlearn(subparsers: Any) -> None:
    """`eul unlearn`; its defaults are the EULConfig ones."""
    # The EULConfig defaults, read from their mirror in eul.params so that building the
    # parser does not import torch.
    from eul.params import UnlearnParams

    unlearn = subparsers.add_parser(
        "unlearn",
        help="train one unlearning layer for one forget request",
        description="Train an unlearning layer that makes the model forget the named "
        "records; the base model is not changed. Saves the layer (safetensors) to --out.",
    )
    unlearn.add_argument("--model", required=True, help="base model folder")
    unlearn.add_argument("--data", required=True, help="the records the model was trained on")
    unlearn.add_argument("--out", required=True, help="folder to save the layer to")
    unlearn.add_argument("--heldout", help="records never trained on (used for references)")
    unlearn.add_argument("--name", help="layer name (default: the --out folder's name)")
    unlearn.add_argument(
        "--objective",
        default="unlikelihood",
        choices=("paper", "unlikelihood", "npo"),
        help="the forgetting loss",
    )
    unlearn.add_argument(
        "--reference",
        default="auto",
        choices=("auto", "threshold", "probe", "none"),
        help="how far each forget row is pushed: to what a probe fitted on the retained rows "
        "gives its label (probe; labelled data only), below p 0.5 or the unseen rows' level "
        "(threshold), or without limit (none); auto (default): probe where every row is "
        "labelled, threshold for free text",
    )
    defaults = UnlearnParams()
    unlearn.add_argument("--epochs", type=positive_int, default=defaults.epochs, help="most epochs")
    unlearn.add_argument(
        "--lr", type=positive_float, default=defaults.lr, help="learning rate of the layer"
    )
    unlearn.add_argument(
        "--retained-sample",
        type=positive_int,
        default=defaults.retained_sample,
        help="retained rows sampled to keep the model's behaviour",
    )
    unlearn.add_argument(
        "--width",
        type=positive_int,
        default=defaults.layer.width,
        help="bottleneck width of the layer",
    )
    unlearn.add_argument(
        "--basis",
        choices=("shared", "trained"),
        default=defaults.layer.basis,
        help="shared: a fixed down projection common to all requests, so layers fuse exactly "
        "(default); trained: both projections trained, as in the paper",
    )
    unlearn.add_argument("--seed", type=int, default=0, help="random seed")
    add_device_option(unlearn)
    add_forget_options(unlearn)
    add_data_options(unlearn)
    unlearn.set_defaults(func=cmd_unlearn)


def _declare_evaluate(subparsers: Any) -> None:
    """`eul evaluate`."""
    ev = subparsers.add_parser(
        "evaluate",
        help="measure a model (with layers) on test, retained and forget data",
        description="Accuracy (ROUGE for generation), memorised-content accuracy, "
        "membership-inference AUC and, with --oracle, the KS forget quality.",
    )
    ev.add_argument("--model", required=True, help="base model folder")
    ev.add_argument(
        "--layer", action="append", help="unlearning layer folder to apply (repeatable)"
    )
    ev.add_argument("--data", required=True, help="the records the model was trained on")
    ev.add_argument("--test", required=True, help="test records")
    ev.add_argument("--heldout", help="unseen records for membership inference (default: --test)")
    ev.add_argument("--oracle", help="a model retrained without the forget records, for KS")
    ev.add_argument("--out", help="write the metrics as JSON here")
    add_device_option(ev)
    add_forget_options(ev)
    add_data_options(ev)
    ev.set_defaults(func=cmd_evaluate)
