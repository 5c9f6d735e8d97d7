"""Debian's nginx on loopback as a TLS-terminating reverse proxy in front
of the webmail, with the configuration the README shows (plus the paths a
process outside /etc needs)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from mailyard.net.tls import create_self_signed
from tests.conftest import require_program
from tests.ports import free_port
from tests.waiting import wait_until

NGINX_CONF = """
{user}
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name mail.example.test;
        ssl_certificate     {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;
        client_max_body_size 40m;
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            {bind}
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
            proxy_read_timeout 1h;
        }}
    }}
}}
"""


class Nginx:
    """nginx serving https://127.0.0.1:``port`` and proxying to ``upstream``;
    ``source`` is the address its connections to mailyard come from."""

    def __init__(self, tmp: Path, upstream: int, source: str | None = None) -> None:
        binary = require_program("nginx", "nginx")
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        create_self_signed("mail.example.test", tmp / "cert.pem", tmp / "key.pem")
        self.port = free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            user="user root;" if os.geteuid() == 0 else "", tmp=tmp, port=self.port, upstream=upstream,
            bind=f"proxy_bind {source};" if source else ""))
        self.proc = subprocess.Popen([binary, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(self._up, timeout=20, what="nginx listening")
        except BaseException:
            self.stop()
            raise

    def _up(self) -> bool:
        log = self.tmp / "error.log"
        assert self.proc.poll() is None, log.read_text() if log.exists() else "nginx exited"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
