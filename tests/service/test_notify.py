"""Notifications received for real: an SMTP server (aiosmtpd) and an HTTP receiver on loopback."""

from __future__ import annotations

import json
import struct
import threading
import zlib
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from fpgaflow.processes import free_port
from fpgaflow.spec import EmailSpec, ExperimentSpec, NotifySpec, WebhookSpec
from fpgaflow.trial import TrialDir, write_json
from fpgaflow_trainer import notify as nt

HISTORY = [
    {"epoch": 1, "epoch_seconds": 0.5, "loss": 1.2, "accuracy": 0.55, "val_loss": 1.1, "val_accuracy": 0.58, "learning_rate": 1e-3},
    {"epoch": 2, "epoch_seconds": 0.4, "loss": 0.9, "accuracy": 0.66, "val_loss": 0.95, "val_accuracy": 0.64, "learning_rate": 1e-3},
    {"epoch": 3, "epoch_seconds": 0.4, "loss": 0.7, "accuracy": 0.74, "val_loss": 0.81, "val_accuracy": 0.7312, "learning_rate": 1e-3},
]
RESULT = {"accuracy": 0.7425, "epochs": 3, "train_seconds": 1.3}


def tiny_png(path):
    """A valid 2x2 grey PNG written with the standard library."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + bytes([0, 255]) for _ in range(2))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


class Inbox:
    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"ada", b"s3cret")
        logins.append(ok)
        return AuthResult(success=ok)

    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), authenticator=authenticator,
                            auth_require_tls=False)
    controller.start()
    inbox.port, inbox.logins = controller.port, logins
    yield inbox
    controller.stop()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        def refuse(constant):
            raise ValueError(f"{constant} is not standard JSON")
        self.server.received.append({"path": self.path, "type": self.headers["Content-Type"],
                                     "json": json.loads(body, parse_constant=refuse)})
        self.send_response(self.server.status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.received, server.status = [], 200
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def email_spec(port, **extra):
    return EmailSpec.model_validate({"to": ["ada@example.org", "bob@example.org"], "sender": "flow@example.org",
                                     "smtpHost": "127.0.0.1", "smtpPort": port, **extra})


def hook_spec(server, path="/services/T000/B000/secret"):
    return WebhookSpec.model_validate({"url": f"http://127.0.0.1:{server.server_port}{path}", "timeoutSeconds": 5})


def test_email_carries_the_results_and_the_curve(smtp, tmp_path):
    png = tiny_png(tmp_path / "training.png")
    spec = NotifySpec(email=email_spec(smtp.port))
    report = nt.notify(spec, "Succeeded", experiment="tiny-jets", trial="t000", result=RESULT, history=HISTORY, curve=png,
                       total_epochs=3)
    assert report == {"event": "Succeeded", "sent": ["email"], "failed": {}}
    [envelope] = smtp.envelopes
    assert envelope.mail_from == "flow@example.org"
    assert envelope.rcpt_tos == ["ada@example.org", "bob@example.org"]
    mail = message_from_bytes(envelope.original_content, policy=policy.default)
    assert mail["Subject"] == "fpgaflow: tiny-jets/t000 training Succeeded"
    body = mail.get_body(("plain",)).get_content()
    assert "Test accuracy: 0.7425" in body
    assert "Validation accuracy: 0.7312" in body and "Validation loss: 0.81" in body
    assert "Epochs: 3 of 3" in body
    [attachment] = list(mail.iter_attachments())
    assert attachment.get_content_type() == "image/png" and attachment.get_filename() == "training.png"
    data = attachment.get_content()
    assert data == png.read_bytes() and png_size(data) == (2, 2)


def test_email_logs_in_with_credentials_from_the_environment(smtp):
    spec = NotifySpec(email=email_spec(smtp.port, usernameEnv="SMTP_USER", passwordEnv="SMTP_PASS"))
    report = nt.notify(spec, "Failed", experiment="e", trial="t001", error=("StageFailed", "out of memory"),
                       history=HISTORY[:1], env={"SMTP_USER": "ada", "SMTP_PASS": "s3cret"})
    assert report["sent"] == ["email"] and smtp.logins == [True]
    body = message_from_bytes(smtp.envelopes[0].original_content, policy=policy.default).get_body(("plain",)).get_content()
    assert "Diagnosis (StageFailed): out of memory" in body

    missing = nt.notify(spec, "Failed", experiment="e", trial="t001", error=("StageFailed", "x"), env={"SMTP_USER": "ada"})
    assert "SMTP_PASS" in missing["failed"]["email"] and len(smtp.envelopes) == 1


def test_webhook_posts_a_slack_payload_with_the_curve_as_text(webhook):
    spec = NotifySpec(webhook=hook_spec(webhook))
    error = ("Diverged", "stopped at epoch 3: validation loss 12.0 is 10x its best 1.1")
    rows = HISTORY[:2] + [{**HISTORY[2], "val_loss": float("nan")}]
    report = nt.notify(spec, "Diverged", experiment="tiny-jets", trial="t002", error=error, history=rows)
    assert report["sent"] == ["webhook"] and report["failed"] == {}
    [got] = webhook.received
    assert got["path"] == "/services/T000/B000/secret" and got["type"] == "application/json"
    payload = got["json"]
    assert payload["text"].startswith("fpgaflow: tiny-jets/t002 training Diverged")
    header, fields = payload["blocks"][0], payload["blocks"][1]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "fpgaflow: tiny-jets/t002 training Diverged"}}
    texts = [f["text"] for f in fields["fields"]]
    assert "*Reason*\nDiverged" in texts and "*Validation accuracy*\n0.7312" in texts
    rest = json.dumps(payload["blocks"][2:], ensure_ascii=False)
    assert "validation loss 12.0 is 10x its best" in rest
    assert "val_loss per epoch: █▁! 1.1 -> nan (min 0.95)" in rest
    assert payload["fpgaflow"]["error"]["reason"] == "Diverged" and payload["fpgaflow"]["val_loss"] == [1.1, 0.95, None]


def test_a_failing_receiver_is_reported_and_never_raised(webhook, capsys):
    webhook.status = 500
    closed = free_port()
    spec = NotifySpec(webhook=hook_spec(webhook), email=email_spec(closed))
    report = nt.notify(spec, "Succeeded", experiment="e", trial="t000", result=RESULT, history=HISTORY)
    assert report["sent"] == []
    assert "HTTP 500" in report["failed"]["webhook"]
    assert f"127.0.0.1:{closed}" in report["failed"]["email"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("notify: ") for line in err)
    assert not any("secret" in line for line in err), "the webhook's path (its secret) must not be printed"


def test_an_event_not_listed_sends_nothing(webhook, smtp):
    spec = NotifySpec(on=["Failed", "Diverged"], webhook=hook_spec(webhook), email=email_spec(smtp.port))
    report = nt.notify(spec, "Succeeded", experiment="e", trial="t000", result=RESULT, history=HISTORY)
    assert report == {"event": "Succeeded", "sent": [], "failed": {}}
    assert webhook.received == [] and smtp.envelopes == []


def test_sparkline_scales_low_to_high():
    assert nt.sparkline([3.0, 2.0, 1.0]) == "█▅▁"
    assert nt.sparkline([1.0, 1.0]) == "▅▅"
    assert len(nt.sparkline([float(i) for i in range(500)])) == nt.SPARK_WIDTH


@pytest.mark.slow
def test_notify_trial_draws_the_curve_of_a_diverged_run(smtp, tmp_path):
    spec = ExperimentSpec.model_validate({"notify": {"on": ["Diverged"], "email": {
        "to": ["ada@example.org"], "smtpHost": "127.0.0.1", "smtpPort": smtp.port}}})
    trial = TrialDir.create(tmp_path / "t003", "tiny-jets", "t003", {}, spec)
    out = trial.stage_dir("train")
    write_json(out / "history.json", {"total_epochs": 10, "epochs": HISTORY})
    report = nt.notify_trial(trial, out, "Diverged", error=nt.NotificationError("stopped at epoch 3", reason="Diverged"))
    assert report["sent"] == ["email"]
    mail = message_from_bytes(smtp.envelopes[0].original_content, policy=policy.default)
    assert mail["Subject"] == "fpgaflow: tiny-jets/t003 training Diverged"
    assert "Epochs: 3 of 10" in mail.get_body(("plain",)).get_content()
    [attachment] = list(mail.iter_attachments())
    width, height = png_size(attachment.get_content())
    assert width > 100 and height > 100
