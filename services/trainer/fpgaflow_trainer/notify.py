"""Notifications when a trial's training ends: email over SMTP and a JSON webhook (Slack-compatible).

The message carries the validation results and the training curve: training.png attached to the email,
and in the webhook (which cannot carry a file) a text sparkline of the validation loss per epoch with the
numbers. A notification that fails never changes the stage's outcome: :func:`notify` logs one line per
failed channel to stderr and returns what was sent and what failed.
"""

from __future__ import annotations

import json
import math
import os
import smtplib
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from fpgaflow.errors import FpgaflowError

EVENTS = ("Succeeded", "Failed", "Diverged")
SPARKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 60  # longer histories are sampled down to this many characters
TABLE_ROWS = 20  # epochs listed in the body: the last ones
TABLE_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
SMTP_TIMEOUT = 30.0


class NotificationError(FpgaflowError):
    reason = "NotificationFailed"


@dataclass
class Message:
    """One notification, built once and sent to every channel."""

    subject: str
    text: str  # plain-text body of the email
    payload: dict  # webhook JSON
    image: Path | None = None  # training.png, attached to the email when it exists
    facts: dict[str, str] = field(default_factory=dict)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def sparkline(values: list[float], width: int = SPARK_WIDTH) -> str:
    """One character per value, low to high (▁ to █); a non-finite value is ``!``."""
    if len(values) > width:  # sample evenly, keeping the first and the last
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return "!" * len(values)
    low, high = min(finite), max(finite)
    chars = []
    for v in values:
        if not (isinstance(v, (int, float)) and math.isfinite(v)):
            chars.append("!")
        elif high == low:
            chars.append(SPARKS[len(SPARKS) // 2])
        else:
            chars.append(SPARKS[min(len(SPARKS) - 1, int((v - low) / (high - low) * len(SPARKS)))])
    return "".join(chars)


def _column(rows: list[dict], key: str) -> list[float]:
    return [row[key] for row in rows if isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool)]


def facts(event: str, result: Mapping | None, error: tuple[str, str] | None, rows: list[dict],
          total_epochs: int | None = None) -> dict[str, str]:
    """The headline numbers, name to formatted value, in the order a reader wants them."""
    out: dict[str, str] = {"Event": event}
    if error is not None:
        out["Reason"] = error[0]
    done = (result or {}).get("epochs", len(rows)) if rows or result else None
    if done is not None:
        out["Epochs"] = f"{done} of {total_epochs}" if total_epochs else str(done)
    last = rows[-1] if rows else {}
    for key, name in (("val_accuracy", "Validation accuracy"), ("val_loss", "Validation loss")):
        if key in last:
            out[name] = _fmt(last[key])
    val_loss = _column(rows, "val_loss")
    finite = [(v, i) for i, v in enumerate(val_loss) if math.isfinite(v)]
    if finite:
        best, at = min(finite)
        out["Best validation loss"] = f"{_fmt(best)} (epoch {rows[at]['epoch'] if 'epoch' in rows[at] else at + 1})"
    if result and "accuracy" in result:
        out["Test accuracy"] = _fmt(result["accuracy"])
    for key, value in (result or {}).items():
        if key not in ("accuracy", "epochs") and isinstance(value, (int, float, str)) and value is not None:
            out[key] = _fmt(value)
    return out


def _table(rows: list[dict]) -> list[str]:
    keys = [k for k in TABLE_KEYS if any(k in row for row in rows)]
    shown = rows[-TABLE_ROWS:]
    lines = ["  ".join(["epoch".rjust(5), *(k.rjust(12) for k in keys)])]
    for row in shown:
        lines.append("  ".join([str(row.get("epoch", "")).rjust(5), *(_fmt(row[k]).rjust(12) if k in row else "".rjust(12)
                                                                     for k in keys)]))
    if len(rows) > len(shown):
        lines.insert(1, f"  ({len(rows) - len(shown)} earlier epochs not listed)")
    return lines


def curve_line(rows: list[dict], key: str = "val_loss") -> str | None:
    """``val_loss per epoch: ▇▅▃▁ 0.91 -> 0.42 (min 0.40)``, or None without that column."""
    values = _column(rows, key)
    if not values:
        return None
    finite = [v for v in values if math.isfinite(v)]
    lowest = f" (min {_fmt(min(finite))})" if finite else ""
    return f"{key} per epoch: {sparkline(values)} {_fmt(values[0])} -> {_fmt(values[-1])}{lowest}"


def strict_json(value: Any) -> Any:
    """``value`` with NaN and infinities as null: webhooks take standard JSON only."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def _error_pair(error: Any) -> tuple[str, str] | None:
    if error is None:
        return None
    if isinstance(error, BaseException):
        return getattr(error, "reason", type(error).__name__), str(error)
    reason, message = error
    return str(reason), str(message)


def build_message(experiment: str, trial: str, event: str, *, result: Mapping | None = None, error: Any = None,
                  history: list[dict] | None = None, curve: Path | None = None, total_epochs: int | None = None) -> Message:
    """The subject, plain-text body and Slack-compatible payload of one event.

    ``error`` is (reason, message) or an exception; ``history`` the rows of history.json; ``curve`` the
    path of training.png (attached when it exists).
    """
    if event not in EVENTS:
        raise ValueError(f"event must be one of {', '.join(EVENTS)}, got {event!r}")
    rows = [row for row in (history or []) if isinstance(row, dict)]
    pair = _error_pair(error)
    subject = f"fpgaflow: {experiment}/{trial} training {event}"
    found = facts(event, result, pair, rows, total_epochs)
    image = Path(curve) if curve is not None and Path(curve).is_file() else None
    spark = curve_line(rows)

    body = [subject, "", f"Experiment: {experiment}", f"Trial: {trial}"]
    body += [f"{name}: {value}" for name, value in found.items()]
    if pair is not None:
        body += ["", f"Diagnosis ({pair[0]}): {pair[1]}"]
    if spark:
        body += ["", spark]
    if rows:
        body += ["", *_table(rows)]
    body += ["", "The training curves are attached (training.png)." if image else "No training curve was drawn."]

    fields = [{"type": "mrkdwn", "text": f"*{name}*\n{value}"} for name, value in
              [("Experiment", experiment), ("Trial", trial), *found.items()]][:10]  # Slack allows 10 fields
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": subject[:150]}},
        {"type": "section", "fields": fields},
    ]
    if pair is not None:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Diagnosis ({pair[0]})*\n{pair[1]}"[:3000]}})
    if spark:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"`{spark}`"[:3000]}})
    summary = ", ".join(f"{name} {value}" for name, value in found.items() if name != "Event")
    payload = {
        "text": f"{subject}: {summary}" if summary else subject,
        "blocks": blocks,
        "fpgaflow": {  # the same facts for a receiver that is not Slack
            "experiment": experiment, "trial": trial, "event": event,
            "result": dict(result) if result else None,
            "error": {"reason": pair[0], "message": pair[1]} if pair else None,
            "val_loss": _column(rows, "val_loss"), "val_accuracy": _column(rows, "val_accuracy"),
        },
    }
    return Message(subject, "\n".join(body) + "\n", strict_json(payload), image, found)


def email_message(email: Any, message: Message) -> EmailMessage:
    """The MIME message for an ``EmailSpec``: the body, and training.png attached when there is one."""
    msg = EmailMessage()
    msg["Subject"] = message.subject
    msg["From"] = email.sender
    msg["To"] = ", ".join(email.to)
    msg.set_content(message.text)
    if message.image is not None:
        msg.add_attachment(message.image.read_bytes(), maintype="image", subtype="png", filename=message.image.name)
    return msg


def _credentials(email: Any, env: Mapping[str, str]) -> tuple[str, str] | None:
    names = (email.username_env, email.password_env)
    if names == (None, None):
        return None
    if None in names:
        raise NotificationError("email: usernameEnv and passwordEnv go together; set both or neither")
    missing = [name for name in names if not env.get(name)]
    if missing:
        raise NotificationError(f"email: the environment variable {', '.join(missing)} holding the SMTP credentials is not set")
    return env[names[0]], env[names[1]]


def send_email(email: Any, message: Message, env: Mapping[str, str] | None = None, timeout: float = SMTP_TIMEOUT) -> None:
    """Send over SMTP to ``email.to`` (STARTTLS when asked; credentials from the named environment variables)."""
    credentials = _credentials(email, os.environ if env is None else env)
    msg = email_message(email, message)
    where = f"{email.smtp_host}:{email.smtp_port}"
    try:
        with smtplib.SMTP(email.smtp_host, email.smtp_port, timeout=timeout) as smtp:
            smtp.ehlo()
            if email.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if credentials is not None:
                smtp.login(*credentials)
            smtp.send_message(msg, from_addr=email.sender, to_addrs=list(email.to))
    except (OSError, smtplib.SMTPException) as exc:
        raise NotificationError(f"email via {where}: {type(exc).__name__}: {exc}") from None


def _site(url: str) -> str:
    """scheme://host[:port] of a URL: a webhook's path often holds its secret and is never printed."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def send_webhook(webhook: Any, payload: dict) -> int:
    """POST ``payload`` as JSON to ``webhook.url``; returns the HTTP status, a non-2xx one is an error."""
    request = urllib.request.Request(webhook.url, data=json.dumps(strict_json(payload), allow_nan=False).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "fpgaflow"})
    site = _site(webhook.url)
    try:
        with urllib.request.urlopen(request, timeout=webhook.timeout_seconds) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        raise NotificationError(f"webhook {site} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise NotificationError(f"webhook {site} could not be reached: {getattr(exc, 'reason', exc)}") from None
    if not 200 <= status < 300:
        raise NotificationError(f"webhook {site} answered HTTP {status}")
    return status


def notify(spec: Any, event: str, *, experiment: str, trial: str, result: Mapping | None = None, error: Any = None,
           history: list[dict] | None = None, curve: Path | None = None, total_epochs: int | None = None,
           env: Mapping[str, str] | None = None) -> dict:
    """Send ``event`` to every channel of a ``NotifySpec`` that lists it; never raises.

    Returns ``{"event", "sent": [channels], "failed": {channel: message}}``; each failure is also one
    line on stderr.
    """
    report: dict = {"event": event, "sent": [], "failed": {}}
    if spec is None or event not in spec.on:
        return report
    channels = [(name, target) for name, target in (("email", spec.email), ("webhook", spec.webhook)) if target is not None]
    if not channels:
        return report
    try:
        message = build_message(experiment, trial, event, result=result, error=error, history=history, curve=curve,
                                total_epochs=total_epochs)
    except Exception as exc:  # a notification must not change the stage's outcome
        message, problem = None, f"could not build the message: {type(exc).__name__}: {exc}"
    for name, target in channels:
        try:
            if message is None:
                raise NotificationError(problem)
            if name == "email":
                send_email(target, message, env=env)
            else:
                send_webhook(target, message.payload)
            report["sent"].append(name)
        except Exception as exc:
            report["failed"][name] = str(exc)
            print(f"notify: {name} for {experiment}/{trial} ({event}) failed: {exc}", file=sys.stderr, flush=True)
    return report


def notify_trial(trial: Any, out: Path, event: str, *, result: Mapping | None = None, error: Any = None) -> dict:
    """:func:`notify` for a trial folder (``TrialDir``) and its train stage folder ``out``; never raises.

    Reads the spec's ``notify``, history.json and training.png from ``out``; when training ended before
    training.png was drawn (Failed, Diverged) the curves are drawn from the history for the email.
    """
    try:
        spec = trial.spec()
        if spec.notify is None or event not in spec.notify.on:
            return {"event": event, "sent": [], "failed": {}}
        experiment, name = trial.experiment, trial.root.name
        doc = _read(out / "history.json")
        rows = doc.get("epochs", []) if isinstance(doc, dict) else []
        total = doc.get("total_epochs") if isinstance(doc, dict) else None
        curve = out / "training.png"
        if not curve.exists() and rows:
            curve = _draw(rows, out / "training.png", f"{experiment} / {name}")
    except Exception as exc:
        print(f"notify: could not prepare the {event} notification: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return {"event": event, "sent": [], "failed": {"prepare": str(exc)}}
    return notify(spec.notify, event, experiment=experiment, trial=name, result=result, error=error, history=rows,
                  curve=curve, total_epochs=total)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _draw(rows: list[dict], path: Path, title: str) -> Path | None:
    """training.png from history rows (the train stage draws it only on success); None if it cannot."""
    try:
        from fpgaflow.plots import plot_training

        plot_training(rows, path, title)
        return path
    except Exception as exc:
        print(f"notify: no training curve: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return None
