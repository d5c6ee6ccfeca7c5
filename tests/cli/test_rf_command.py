import json


def test_rf_json_study_value(run_cli):
    code, out, _ = run_cli("rf", "--depth", 2, "--pool", "2,2", "--pixel-size", 0.02152, "--json")
    assert code == 0
    r = json.loads(out)
    assert r["rf_px"] == 44
    assert round(r["rf_nm"], 2) == 0.95
    assert r["architecture"]["filters"] == [4, 8, 16]


def test_rf_table_of_a_depth_4_network(run_cli):
    code, out, _ = run_cli("rf", "--pool", 4, "--depth", 4)
    assert code == 0
    assert "1960 px" in out


def test_rf_bad_pool_is_exit_2_without_traceback(run_cli):
    code, out, err = run_cli("rf", "--depth", 2, "--pool", "2,2,2")
    assert code == 2
    assert "--pool" in err and "Traceback" not in err + out


def test_rf_cover_needs_pixel_size(run_cli):
    code, _, err = run_cli("rf", "--cover", 5)
    assert code == 2 and "--pixel-size" in err
    code, out, _ = run_cli("rf", "--cover", 5, "--pixel-size", 0.02152, "--json")
    recs = json.loads(out)["recommendations"]
    assert recs and all(r["rf_nm"] >= 5 for r in recs)
