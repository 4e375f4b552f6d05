"""``owlet train`` and ``owlet eval``: argparse subcommands over :mod:`model.train.trainer`."""

from __future__ import annotations

import argparse

__all__ = ["register_cli"]


def _train(args: argparse.Namespace) -> int:
    from model.train.trainer import train

    result = train(
        cfg_path=args.cfg, outdir=args.outdir, synthetic=args.data is None, data=args.data,
        valid=args.valid, init_weights=args.weights, qat=args.qat, qat_batches=args.qat_batches,
        seed=args.seed, max_batches=args.max_batches, eval_every=args.eval_every,
        test_images=args.test_images, resume=not args.no_resume,
    )
    print(f"weights: {result.weights}\nquantized model: {result.quantized}\n"
          f"training time: {result.seconds:.0f} s")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from model.train.trainer import evaluate

    evaluate(args.cfg, args.weights, quantized=args.quantized, synthetic=args.data is None,
             data=args.data, seed=args.seed, test_images=args.test_images, outdir=args.outdir)
    return 0


def register_cli(subparsers) -> None:
    """Add the ``train`` and ``eval`` subcommands to an argparse ``subparsers`` object.

    Each subparser sets ``func`` (taking the parsed namespace, returning an exit code).
    """
    from model.train.trainer import DEFAULT_CFG

    t = subparsers.add_parser("train", help="train a detector (numpy, darknet-compatible)")
    t.add_argument("--cfg", default=str(DEFAULT_CFG), help="darknet cfg (default: %(default)s)")
    src = t.add_mutually_exclusive_group()
    src.add_argument("--data", help="darknet list file of training images (labels/ alongside)")
    src.add_argument("--synthetic", action="store_true",
                     help="train on the built-in synthetic set (the default without --data)")
    t.add_argument("--valid", help="list file of evaluation images (with --data)")
    t.add_argument("--weights", help="initial darknet .weights (default: random init)")
    t.add_argument("--qat", action="store_true", help="quantization-aware training")
    t.add_argument("--qat-batches", type=int,
                   help="QAT batches at the end of the run (default: 20%%, all with --weights)")
    t.add_argument("-o", "--outdir", required=True, help="output directory")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-batches", type=int, help="override the cfg's max_batches")
    t.add_argument("--eval-every", type=int, default=200, help="batches between evaluations")
    t.add_argument("--test-images", type=int, default=500, help="synthetic test-set size")
    t.add_argument("--no-resume", action="store_true", help="ignore checkpoints in OUTDIR")
    t.set_defaults(func=_train)

    e = subparsers.add_parser("eval", help="mAP of the float network and the int8 golden model")
    e.add_argument("--cfg", default=str(DEFAULT_CFG))
    e.add_argument("--weights", required=True, help="darknet .weights")
    e.add_argument("--quantized", help=".npz quantized model (default: calibrate one, PTQ)")
    e.add_argument("--data", help="list file of test images (default: the synthetic test set)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--test-images", type=int, default=500)
    e.add_argument("-o", "--outdir", help="write PR-curve PNGs here")
    e.set_defaults(func=_eval)
