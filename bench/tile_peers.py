"""The tile servers ``bench/tiles.py`` loads besides Archipel: Orthanc with its WSI plugin, and nginx (static files,
and the signed-URL fast path). Each starts on loopback, on a free port, in a folder of its own, and stops."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path

import httpx

from bench.peers import _stop_process
from tests.support import free_port, wait_until

WSI_PLUGIN = "/usr/share/orthanc/plugins/libOrthancWSI.so"


class OrthancWsi:
    """Orthanc with the WSI plugin (``/wsi/tiles/{series}/{level}/{x}/{y}``), holding one dicomized slide."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.http_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.series = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        config = {
            "Name": "archipel-bench-wsi",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.http_port,
            "DicomPort": free_port(),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [WSI_PLUGIN],
            "StorageCompression": False,
            "HttpDescribeErrors": True,
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        log = (self.folder / "orthanc.log").open("ab")
        self.proc = subprocess.Popen(["Orthanc", str(path)], stdout=log, stderr=subprocess.STDOUT)

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited; see {self.folder / 'orthanc.log'}")
            try:
                return httpx.get(self.url + "/system", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 60, "Orthanc to answer")

    def load(self, dicom: Path) -> dict[str, object]:
        """Store every file of ``dicom`` (OrthancWSIDicomizer's output); the pyramid the plugin describes."""
        with httpx.Client(base_url=self.url, timeout=120) as client:
            for file in sorted(dicom.iterdir()):
                client.post("/instances", content=file.read_bytes()).raise_for_status()
            [self.series] = client.get("/series").json()
            pyramid = client.get(f"/wsi/pyramids/{self.series}")
            pyramid.raise_for_status()
            return dict(pyramid.json())

    def stop(self) -> None:
        _stop_process(self.proc)
        self.proc = None


class Nginx:
    """nginx as a user process (``-p`` prefix, ``daemon off``) on a free loopback port; ``locations`` is put in
    its ``server`` block as is."""

    def __init__(self, folder: Path, locations: str) -> None:
        self.folder = folder
        self.locations = locations
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "logs").mkdir(exist_ok=True)
        self.port = free_port()
        # One worker: the other core runs wrk, as for Archipel and Orthanc (same machine share for all).
        # Started by root, nginx's workers would run as nobody, who cannot enter a private temporary folder.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
        conf = f"""{user}
daemon off;
worker_processes 1;
pid {self.folder}/nginx.pid;
error_log {self.folder}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {self.folder}/body;
    proxy_temp_path {self.folder}/proxy;
    fastcgi_temp_path {self.folder}/fastcgi;
    uwsgi_temp_path {self.folder}/uwsgi;
    scgi_temp_path {self.folder}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
{self.locations}
    }}
}}
"""
        path = self.folder / "nginx.conf"
        path.write_text(conf)
        log = (self.folder / "logs" / "stderr.log").open("ab")
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(self.folder), "-c", str(path)], stdout=log, stderr=subprocess.STDOUT
        )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited; see {self.folder / 'logs'}")
            try:
                httpx.get(self.url + "/", timeout=1)
                return True
            except httpx.HTTPError:
                return False

        wait_until(ready, 30, "nginx to answer")

    def stop(self) -> None:
        _stop_process(self.proc)
        self.proc = None
