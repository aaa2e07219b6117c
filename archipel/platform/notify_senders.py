"""Senders that reach people outside the platform: SMTP for e-mail (and e-mail-to-SMS gateways), and an HTTP
webhook for SMS gateways.

They register with :func:`archipel.platform.notify.register_sender` under their URL schemes:

- ``smtp://[user:password@]host[:port]?from=ADDRESS[&starttls=1][&sms_domain=DOMAIN]`` and ``smtps://`` (TLS from
  the first byte). ``sms`` messages go to ``NUMBER@sms_domain`` when the gateway takes e-mail; without
  ``sms_domain`` they are refused and stay queued.
- ``http(s)://gateway/path``: each message is POSTed as JSON ``{"channel", "to", "subject", "body"}``; any 2xx
  answer counts as sent.

Credentials come in the URL from the settings (``ARCHIPEL_NOTIFY_URL``, or per channel
``ARCHIPEL_NOTIFY_EMAIL_URL`` and ``ARCHIPEL_NOTIFY_SMS_URL``), never from code.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.request
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from archipel.platform import notify

TIMEOUT = 15


class UndeliverableMessage(ValueError):
    """The sender cannot carry this message (e.g. an SMS without an SMS gateway)."""


class SmtpSender:
    """Sends each message as one e-mail over SMTP (STARTTLS or implicit TLS when asked)."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        self.tls = parsed.scheme == "smtps"
        self.host = parsed.hostname or "localhost"
        self.port = parsed.port or (465 if self.tls else 25)
        self.user = unquote(parsed.username or "")
        self.password = unquote(parsed.password or "")
        self.sender = query.get("from", "")
        if not self.sender:
            raise ValueError("an smtp notify URL needs ?from=ADDRESS")
        self.starttls = query.get("starttls", "") in ("1", "true", "yes")
        self.sms_domain = query.get("sms_domain", "")
        #: Seconds the connection and each SMTP step may take.
        self.timeout: float = TIMEOUT

    def _address(self, message: notify.Message) -> str:
        if message.channel == "email":
            return message.recipient
        if not self.sms_domain:
            raise UndeliverableMessage("this SMTP sender has no sms_domain for text messages")
        number = "".join(c for c in message.recipient if c.isdigit() or c == "+")
        return f"{number}@{self.sms_domain}"

    def send(self, message: notify.Message) -> None:
        """Deliver ``message``; raises on refusal so that it stays queued."""
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = self._address(message)
        mail["Subject"] = message.subject
        mail["Message-ID"] = make_msgid(idstring=f"archipel-{message.id}")
        mail.set_content(message.body)
        context = ssl.create_default_context()
        smtp: smtplib.SMTP = (
            smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            if self.tls
            else smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        )
        with smtp:
            if self.starttls:
                smtp.starttls(context=context)
            if self.user:
                smtp.login(self.user, self.password)
            smtp.send_message(mail)


class WebhookSender:
    """POSTs each message as JSON to an SMS (or messaging) gateway."""

    def __init__(self, url: str) -> None:
        self.url = url
        #: Seconds the gateway may take to answer.
        self.timeout: float = TIMEOUT

    def send(self, message: notify.Message) -> None:
        """Deliver ``message``; a non-2xx answer raises, so that it stays queued."""
        body = json.dumps(
            {
                "channel": message.channel,
                "to": message.recipient,
                "subject": message.subject,
                "body": message.body,
            }
        ).encode()
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as answer:
            if not 200 <= answer.status < 300:
                raise UndeliverableMessage(f"gateway answered {answer.status}")


def _smtp(url: str, _data_dir: Path) -> notify.Sender:
    return SmtpSender(url)


def _webhook(url: str, _data_dir: Path) -> notify.Sender:
    return WebhookSender(url)


for _scheme in ("smtp", "smtps"):
    notify.register_sender(_scheme, _smtp)
for _scheme in ("http", "https"):
    notify.register_sender(_scheme, _webhook)
