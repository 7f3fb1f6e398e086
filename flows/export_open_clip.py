"""`medconcept export-open-clip`: a trained ConceptCLIP as a folder open_clip loads.

    medconcept export-open-clip data/train_conceptclip exports/conceptclip-open_clip
    medconcept export-open-clip --relink exports/conceptclip-open_clip   # after moving the folder

Then `open_clip.create_model("local-dir:<folder>")` and `open_clip.get_tokenizer("local-dir:<folder>")`.
"""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medconcept export-open-clip",
        description="Write a train_conceptclip output as an open_clip model folder (config, weights, tokenizer).")
    parser.add_argument("folders", nargs="+", metavar="DIR",
                        help="<trained_dir> <out_dir>, or with --relink the one export folder")
    parser.add_argument("--relink", action="store_true",
                        help="point a moved export's text tower path (open_clip needs it absolute) at its new place")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    expected = 1 if args.relink else 2
    if len(args.folders) != expected:
        parser.error("--relink takes one export folder" if args.relink else "give <trained_dir> <out_dir>")
    from tasks.training.export_open_clip import export_open_clip, relink_text_tower

    try:
        if args.relink:
            folder = relink_text_tower(args.folders[0])
            print(f"[export-open-clip] {folder}: text tower now {folder / 'text'}")
        else:
            folder = export_open_clip(args.folders[0], args.folders[1])
            print(f"[export-open-clip] wrote {folder}; load it with "
                  f"open_clip.create_model('local-dir:{folder}') and open_clip.get_tokenizer('local-dir:{folder}')")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
