"""Settings from ``ARCHIPEL_*`` environment variables, then ``archipel.toml``, then defaults.

The data directory anchors every embedded default: the SQLite index, the filesystem blob store and the
embedded broker all live inside it, so ``archipel serve --data DIR`` needs nothing else installed.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DuplicatePolicy = Literal["keep-first", "version"]


def _toml_file() -> Path:
    return Path(os.environ.get("ARCHIPEL_CONFIG", "archipel.toml"))


class Settings(BaseSettings):
    """Every setting of one Archipel process.

    ``database_url``, ``blob_url`` and ``broker_url`` are empty by default, meaning "the embedded default inside
    ``data_dir``"; use the ``effective_*`` properties to read what is actually used.
    """

    model_config = SettingsConfigDict(env_prefix="ARCHIPEL_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(
        default_factory=lambda: Path("var"),
        validation_alias=AliasChoices("data_dir", "ARCHIPEL_DATA", "ARCHIPEL_DATA_DIR"),
    )
    database_url: str = ""
    blob_url: str = ""
    broker_url: str = ""
    #: Endpoint of the S3-compatible service of ``s3://`` blob stores (empty: AWS's own); the credentials are
    #: botocore's (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, a profile or an instance role), never ours.
    s3_endpoint_url: str = ""
    #: Region of that service (empty: botocore's default).
    s3_region: str = ""
    #: Seconds Redis waits before it hands a task whose worker died (never acknowledged) to another worker. It
    #: must exceed the longest conversion: a task still running past it is handed out a second time, and that copy
    #: waits for the first (decision 0043).
    broker_visibility_timeout: int = Field(default=3600, ge=1)
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    dicom_host: str = "0.0.0.0"
    dicom_port: int = 11112
    #: The MLLP listener for HL7 v2 from the sites' RIS (``archipel serve``, ``archipel hl7 listen``).
    hl7_host: str = "0.0.0.0"
    hl7_port: int = 2575
    #: HTTPS for ``archipel api`` / ``serve``: PEM certificate (chain) and key files; both empty: plain HTTP.
    http_tls_cert: str = ""
    http_tls_key: str = ""
    #: DICOM TLS (PS3.15 B.1) on the listener: PEM certificate (chain) and key files; both empty: plain DICOM.
    dicom_tls_cert: str = ""
    dicom_tls_key: str = ""
    #: CA bundle (PEM) the listener checks client certificates against; set, a peer without one is refused.
    dicom_tls_ca: str = ""
    #: A shared deployment: ``archipel api`` / ``dicom`` / ``worker`` refuse to start on keys kept in the data
    #: dir (each process would make its own). Implied when the index is not the embedded SQLite.
    production: bool = False
    #: File a worker touches while its consumer runs (``archipel worker-probe`` checks it); empty: DATA/worker.alive.
    worker_heartbeat_file: str = ""
    ae_title: str = "ARCHIPEL"
    #: What to do when a SOP Instance UID arrives again with different bytes.
    duplicate_policy: DuplicatePolicy = "keep-first"
    #: Signing key for access tokens; generated into the data dir when empty.
    secret_key: str = ""
    #: Lifetime of one access token; a session outlives it and hands out new ones (POST /api/auth/refresh).
    token_minutes: int = 15
    #: A session ends after this many minutes without a request ...
    session_idle_minutes: int = 30
    #: ... and this many hours after its login, whatever happens.
    session_max_hours: int = 12
    #: Local accounts need a TOTP code at login (every role; see docs/decisions).
    require_totp: bool = True
    #: Issuer name shown by authenticator apps.
    totp_issuer: str = "Archipel"
    #: Consecutive failed logins that lock an account, and for how long.
    lockout_threshold: int = 5
    lockout_minutes: int = 15
    #: Failed attempts allowed per account (or patient access code) in any hour.
    failed_attempts_per_hour: int = 100
    #: Mark the web session cookies Secure (HTTPS only); turn off only for a plain-HTTP development setup.
    cookie_secure: bool = True
    #: OpenID Connect provider (e.g. Pro Sante Connect): issuer, JWKS URL and the audience tokens must carry.
    oidc_issuer: str = ""
    oidc_jwks_url: str = ""
    oidc_audience: str = ""
    #: Claim that identifies the professional (Pro Sante Connect: the RPPS number), and a prefix for it.
    oidc_subject_claim: str = "sub"
    oidc_subject_prefix: str = "oidc:"
    #: Claim whose value(s) map to an Archipel role through ``oidc_role_map`` (JSON object in the environment).
    oidc_role_claim: str = "roles"
    oidc_role_map: dict[str, str] = Field(default_factory=dict)
    #: Claim naming the professional's organisation / site; empty means none.
    oidc_site_claim: str = ""
    #: Authorization-code flow for browsers: our client registration and the provider's endpoints.
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_authorization_url: str = ""
    oidc_token_url: str = ""
    #: Our callback as registered with the provider, e.g. https://archipel.example/api/auth/oidc/callback
    oidc_redirect_url: str = ""
    oidc_scopes: str = "openid"
    #: Where ``notify`` delivers messages: empty means files in DATA/outbox.
    notify_url: str = ""
    #: Where e-mails, resp. text messages, go when they need another provider than ``notify_url`` (e.g.
    #: ``smtp://…`` for e-mail and an SMS gateway's ``https://…``); empty: ``notify_url``.
    notify_email_url: str = ""
    notify_sms_url: str = ""
    #: Seconds between two sweeps of the outbox by the ``notify`` job (0: its default, 30 s).
    notify_sweep_seconds: float = 0.0
    #: Seconds between two looks at the screening exams still missing a view (0: its default, 60 s).
    screening_settle_seconds: float = 0.0
    #: A failed message is tried again after ``notify_retry_seconds``, then twice as long each time up to
    #: ``notify_retry_max_seconds``, ``notify_max_attempts`` times in all (by default about 13 hours), and is
    #: then listed as failed (``archipel notify list --failed``).
    notify_max_attempts: int = Field(default=20, ge=1)
    notify_retry_seconds: float = Field(default=30.0, gt=0)
    notify_retry_max_seconds: float = Field(default=3600.0, gt=0)
    #: Days a patient access code stays valid, and minutes a one-time code does.
    patient_code_days: int = 90
    patient_otp_minutes: int = 10
    #: One-time codes sent at most per access code in any hour (the rest is answered 429 with Retry-After).
    patient_otp_sends_per_hour: int = Field(default=5, ge=1)
    #: Seconds the network senders may take for a one-time code, sent after the answer to the patient (a
    #: failure stays in the outbox for the sweep).
    patient_otp_send_seconds: float = Field(default=5.0, gt=0)
    #: Maximum number of simultaneous DICOM associations.
    max_associations: int = 16
    #: Seconds an orphan blob must be old before the start-up sweep removes it.
    orphan_grace_seconds: int = 0
    #: Retention rules (docs/retention.md): a TOML file of rules by category; empty: the French rule for all.
    retention_rules_file: str = ""
    #: Days an instance rejected by an IOCM note (other than 113039, deleted at once) is kept before deletion.
    retention_rejected_days: int = Field(default=30, ge=0)
    #: Whether the weekly retention job deletes what has expired (off by default: ``archipel retention run``).
    retention_scheduled: bool = False
    retention_period_seconds: int = Field(default=7 * 24 * 3600, ge=3600)
    #: Archive tier of the blob store (a second directory or bucket); empty: one tier, nothing is moved. Blobs of
    #: studies received longer than ``storage_hot_days`` ago move there (docs/storage.md).
    archive_blob_url: str = ""
    storage_hot_days: int = Field(default=730, ge=1)
    #: Local read cache of blobs fetched from the archive tier (MiB; 0: no cache) and its folder (empty:
    #: DATA/archive-cache).
    archive_cache_mb: int = Field(default=2048, ge=0)
    archive_cache_dir: str = ""
    #: Optional replica store that the daily storage job fills with a copy of every blob; fixity repairs from it.
    replica_blob_url: str = ""
    #: Days in which the fixity job re-reads every stored object once.
    fixity_cycle_days: int = Field(default=90, ge=1)
    #: Minutes a break-the-glass access lasts, and how recent (seconds) the login behind it must be.
    break_glass_minutes: int = Field(default=240, ge=1, le=24 * 60)
    break_glass_reauth_seconds: int = Field(default=300, ge=30)
    #: Ed25519 key (PEM file) that signs audit checkpoints; generated into DATA/audit-signing.pem when empty.
    audit_signing_key: str = ""
    #: Extra public keys (base64 of the raw 32 bytes) trusted when verifying checkpoints: rotated-out keys, or
    #: the key of the machine that signed when verifying elsewhere.
    audit_trusted_keys: list[str] = Field(default_factory=list)
    #: ``archipel serve`` signs a checkpoint of the audit chain's head after this many events or seconds.
    audit_checkpoint_events: int = Field(default=1000, ge=1)
    audit_checkpoint_seconds: int = Field(default=300, ge=1)
    #: Days audit events are kept (at least 6 months; default 3 years); ``archipel audit purge`` drops older.
    audit_retention_days: int = Field(default=1095, ge=183)
    #: Blob store of uploaded slide sources, kept apart from the archive's (whose start-up sweep removes blobs
    #: that no instance names); empty: ``file://DATA/slide-sources``.
    wsi_source_url: str = ""
    #: Folder watched for a slide scanner's output (empty: no drop folder); see docs/wsi.md.
    wsi_drop_folder: str = ""
    #: Seconds a dropped file's size and time must stay unchanged before it is taken.
    wsi_drop_stable_seconds: float = Field(default=5.0, ge=0)
    #: Largest pixel data of one DICOM WSI instance (MiB); a larger level is split into a concatenation, which
    #: bounds the memory that indexing one instance takes.
    wsi_max_instance_mb: int = Field(default=256, ge=1)
    #: Largest slide accepted by upload (GiB).
    wsi_max_upload_gb: int = Field(default=64, ge=1)
    #: In-process cache of encoded tiles, per API worker (MiB; 0 disables it).
    tiles_cache_mb: int = Field(default=256, ge=0)
    #: Seconds a tile-access decision is remembered per session and slide (revocation takes effect within it).
    tiles_grant_seconds: float = Field(default=60.0, ge=0)
    #: Key nginx checks signed tile URLs with (``secure_link``); empty: signed tile URLs are not handed out.
    tiles_signing_key: str = ""
    #: Path under which nginx serves the exported tiles (``archipel tiles nginx-config``).
    tiles_signed_prefix: str = "/static-tiles"
    #: Seconds a signed tile URL works (a revoked relationship can read exported tiles for at most this long).
    tiles_signed_seconds: int = Field(default=300, ge=10, le=86400)
    #: Folder of slides exported as static Deep Zoom tiles (``archipel tiles export``); empty: DATA/tile-exports.
    tiles_export_dir: str = ""
    #: Minutes a pathologist's claim on a frozen-section request holds (claiming again renews it).
    frozen_claim_minutes: int = Field(default=10, ge=1, le=120)
    #: How recent (seconds) the pathologist's login must be to sign a frozen-section verdict.
    frozen_verdict_reauth_seconds: int = Field(default=900, ge=30)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=_toml_file()),
        )

    @cached_property
    def effective_database_url(self) -> str:
        """The SQLAlchemy URL: the configured one, or an SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    @cached_property
    def effective_blob_url(self) -> str:
        """The blob store URL: the configured one, or ``file://DATA/blobs``."""
        if self.blob_url:
            return self.blob_url
        return f"file://{(self.data_dir / 'blobs').resolve()}"

    @cached_property
    def effective_broker_url(self) -> str:
        """The Celery broker: the configured one, or the embedded filesystem broker in the data dir."""
        if self.broker_url:
            return self.broker_url
        return "filesystem://"

    @property
    def embedded_broker(self) -> bool:
        """True when jobs go through the embedded filesystem broker."""
        return self.effective_broker_url == "filesystem://"

    @property
    def broker_dir(self) -> Path:
        """Folder of the embedded broker's queue files."""
        return self.data_dir / "broker"

    @property
    def shared_deployment(self) -> bool:
        """True when several processes (machines, pods) run the platform: the ``production`` setting is on, or
        the index is not the embedded SQLite."""
        return self.production or not self.effective_database_url.startswith("sqlite")

    def missing_shared_secrets(self) -> list[str]:
        """The environment variables a shared deployment must set because their embedded default is a file
        created in this process's data dir (empty when none is missing)."""
        missing = []
        if not self.secret_key:
            missing.append("ARCHIPEL_SECRET_KEY")
        if not self.audit_signing_key:
            missing.append("ARCHIPEL_AUDIT_SIGNING_KEY")
        return missing

    def signing_key(self) -> str:
        """The token signing key, created once in the data dir (mode 0600) when not configured."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret.key"
        if not path.exists():
            import secrets

            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
        return path.read_text().strip()


_current: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read once."""
    global _current
    if _current is None:
        _current = Settings()
    return _current


def configure(**overrides: Any) -> Settings:
    """Replace the process-wide settings (CLI options, tests) and return them."""
    global _current
    _current = Settings(**overrides)
    return _current
