"""Wire rules over every response the whole session saw (runs last: file name order)."""

from conftest import RECORDER


def test_no_5xx_anywhere(server):
    bad = [f"{e['method']} {e['url']} -> {e['status']} {e['body']}" for e in RECORDER.entries if e["status"] >= 500]
    assert not bad, "\n".join(bad)


def test_every_response_has_request_id(server):
    assert RECORDER.entries, "no responses recorded"
    missing = [f"{e['method']} {e['url']} -> {e['status']}" for e in RECORDER.entries if not e["request_id"]]
    assert not missing, f"{len(missing)} responses without x-ms-request-id, e.g.:\n" + "\n".join(missing[:20])


def test_client_request_id_echoed(server):
    wrong = [f"{e['method']} {e['url']} sent {e['client_request_id']} got {e['echo']}"
             for e in RECORDER.entries if e["client_request_id"] and e["echo"] != e["client_request_id"]]
    assert not wrong, f"{len(wrong)} responses without the echo, e.g.:\n" + "\n".join(wrong[:20])


def test_no_panics_in_server_log(env):
    text = env.server.log_path.read_text(errors="replace")
    bad = [line for line in text.splitlines() if "panicked" in line or "RUST_BACKTRACE" in line]
    assert not bad, "\n".join(bad[:20])
