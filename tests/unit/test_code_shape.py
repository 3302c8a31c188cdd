"""Code-shape rules the issue tracker asked for, checked on the source: no helper of the train
service or the run executor takes more than 5 parameters (self and cls not counted); related
values travel as a small dataclass (services/train/plan.py, feed.FeedSize, models.Trained)."""

import ast
import pathlib

import helpers

ROOT = pathlib.Path(helpers.ROOT)

MAX_PARAMETERS = 5
CHECKED = ["services/train", "gateway/executor.py"]


def _functions():
    for entry in CHECKED:
        path = ROOT / entry
        for source in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            for node in ast.walk(ast.parse(source.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield source.relative_to(ROOT), node


def test_no_helper_takes_more_than_five_parameters():
    too_many = []
    for source, node in _functions():
        args = node.args
        names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
        count = len([n for n in names if n not in ("self", "cls")]) + bool(args.vararg) + bool(args.kwarg)
        if count > MAX_PARAMETERS:
            too_many.append(f"{source}:{node.lineno} {node.name} takes {count}")
    assert not too_many, too_many


def test_no_two_test_files_share_a_name():
    # pytest imports test files by basename (rootdir-relative packages are not used): two files of one
    # name in different folders stop the whole collection with "import file mismatch".
    seen: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        seen.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert not {name: paths for name, paths in seen.items() if len(paths) > 1}
