"""The output writer: deterministic YAML, atomic replacement of the tree, stale files detected."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from render.output import read_tree, stale_files, to_yaml, write_tree

BODY = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "x", "annotations": {"fleet.dev/source": "jobs/a.yaml"}},
    "data": {
        "script": "line one\nline two\n",
        "long": "word " * 100 + "end",
        "number-like": "0755",
        "bool-like": "yes",
        "unicode": "Zürich",
    },
}


def test_yaml_round_trips_and_keeps_insertion_order() -> None:
    text = to_yaml(BODY)
    assert yaml.safe_load(text) == BODY
    assert text.index("apiVersion") < text.index("kind") < text.index("metadata") < text.index("data")
    assert "script: |" in text  # multi-line text as a literal block
    assert all(len(line) < 2000 for line in text.splitlines())  # no emitter-dependent wrapping either way


def test_shared_objects_are_spelled_out_not_aliased() -> None:
    labels = {"app": "x"}
    text = to_yaml({"metadata": {"labels": labels}, "spec": {"selector": {"matchLabels": labels}}})
    assert "&" not in text and "*" not in text
    assert text.count("app: x") == 2


@pytest.mark.skipif(not hasattr(yaml, "CSafeDumper"), reason="PyYAML built without libyaml")
def test_c_and_python_emitters_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    # Output must be byte-identical on every machine, whichever emitter PyYAML has there.
    import render.output as output

    fast = output.to_yaml(BODY)

    class _PythonDumper(yaml.SafeDumper):
        pass

    _PythonDumper.add_representer(str, output._represent_str)
    monkeypatch.setattr(output, "_Dumper", _PythonDumper)
    assert output.to_yaml(BODY) == fast


def test_write_tree_replaces_the_whole_folder(tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    write_tree({"hub/a.yaml": "a: 1\n", "hub/old.yaml": "old: 1\n"}, out)
    write_tree({"hub/a.yaml": "a: 2\n", "upstream/b.yaml": "b: 1\n"}, out)
    assert read_tree(out) == {"hub/a.yaml": "a: 2\n", "upstream/b.yaml": "b: 1\n"}
    # no staging or retired folders are left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifests"]


def test_write_tree_leaves_the_old_tree_when_writing_fails(tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    write_tree({"hub/a.yaml": "a: 1\n"}, out)
    with pytest.raises(OSError):
        # a file and a folder of the same name cannot both be written
        write_tree({"hub/x": "1\n", "hub/x/y.yaml": "2\n"}, out)
    assert read_tree(out) == {"hub/a.yaml": "a: 1\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifests"]


def test_stale_files_lists_changed_missing_and_extra(tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    write_tree({"a.yaml": "a\n", "b.yaml": "b\n", "c.yaml": "c\n"}, out)
    assert stale_files({"a.yaml": "a\n", "b.yaml": "B\n", "d.yaml": "d\n"}, out) == ["b.yaml", "c.yaml", "d.yaml"]
    assert stale_files({"a.yaml": "a\n", "b.yaml": "b\n", "c.yaml": "c\n"}, out) == []
