"""The main-job benchmark runs end to end on tiny sizes and reports consistent figures."""
import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location("smallnet_layers", ROOT / "bench" / "smallnet_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smallnet_layer_bench_tiny(tmp_path, capsys):
    bench = _load_bench()
    out = tmp_path / "bench.json"
    rows = bench.main(["--batch", "1", "--rate", "2", "--min-run-time", "0.01", "--json", str(out)])
    assert [(r["strategy"], r["layer"]) for r in rows] == [(s, i) for s in ("cl", "ck") for i in (1, 2, 3, 4)]
    for r in rows:
        assert r["compact_ms"] > 0 and r["unfused_ms"] > 0 and r["fused_ms"] > 0
        assert abs(r["fused_vs_compact"] - r["fused_ms"] / r["compact_ms"]) < 1e-9
    record = json.loads(out.read_text())
    assert record["rows"] == rows and record["torch"] and record["command"]
    assert "Whole conv stack" in capsys.readouterr().out
