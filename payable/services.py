"""The embedded local services: an anvil chain node, an Apache Kafka broker and (for Dagster on PostgreSQL)
a private PostgreSQL cluster, run by payable itself.

Each service runs as a child process bound to 127.0.0.1 with its PID file, log and data under the data
directory. ``up`` is idempotent (a running service is left alone, a stale PID file is cleared, a port held
by someone else is an error that says so), ``down`` stops by PID, ``status`` reports health.
Product code never talks to these processes directly: it uses the RPC URL and bootstrap address from
``Settings``, so a real node or a real Kafka cluster replaces them by configuration.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from payable.errors import PayableError
from payable.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
# engines/kafka/pom.xml names the broker's jars; `make install` copies them (Maven Central) into KAFKA_LIB.
KAFKA_ENGINE = REPO_ROOT / "engines" / "kafka"
KAFKA_LIB = REPO_ROOT / ".cache" / "kafka" / "lib"
KAFKA_MAIN = "kafka.Kafka"
# A bounded heap and a quick JIT: a local single-node broker starts in seconds and leaves the cores to the
# pipeline; C1 only (TieredStopAtLevel=1) trades peak throughput nobody needs here for start-up time.
KAFKA_JVM_FLAGS = ("-Xms64m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
                   "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={KAFKA_ENGINE / 'log4j2.properties'}")


class ServiceError(PayableError, RuntimeError):
    """A local service could not be started, or is not healthy (its message says which and why)."""


def anvil_binary() -> Path:
    """The anvil binary that npm installed (pinned in package.json)."""
    path = REPO_ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
    if not path.exists():
        raise ServiceError(f"anvil not found at {path}: run `npm ci` (or `make install`) first")
    return path


def java_binary() -> str:
    """The java that runs the broker (Kafka 4.x needs Java 17 or newer)."""
    java = shutil.which("java", path=f"{os.environ['JAVA_HOME']}/bin") if os.environ.get("JAVA_HOME") else None
    java = java or shutil.which("java")
    if java is None:
        raise ServiceError("java not found: the local Kafka broker needs a Java 17+ runtime (apt-get install "
                           "openjdk-17-jre-headless), or set KAFKA_BOOTSTRAP to a running Kafka cluster")
    return java


def install_kafka() -> None:
    """Resolves the broker's jars (engines/kafka/pom.xml) from Maven Central into KAFKA_LIB, once; `make
    install` calls it, and so does the first start of a checkout where it has not run yet."""
    stamp = KAFKA_LIB / ".installed"
    if stamp.exists():
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("mvn not found: the local Kafka broker's jars come from Maven Central (apt-get install "
                           "maven), or set KAFKA_BOOTSTRAP to a running Kafka cluster")
    shutil.rmtree(KAFKA_LIB, ignore_errors=True)
    resolved = subprocess.run(
        [mvn, "-q", "-B", "-f", str(KAFKA_ENGINE / "pom.xml"), "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={KAFKA_LIB}"], capture_output=True, text=True, timeout=900)
    if resolved.returncode != 0:
        raise ServiceError(f"resolving the Kafka jars failed: {(resolved.stdout + resolved.stderr).strip()[-2000:]}")
    stamp.touch()


def kafka_classpath() -> str:
    """The broker's classpath: the jars resolved from engines/kafka/pom.xml."""
    install_kafka()
    return f"{KAFKA_LIB}/*"


def noida_binary() -> Path:
    """The noida-db emulator binary shipped in its wheel (the binary itself, never the Python wrapper)."""
    import noida_db

    path = Path(noida_db.__file__).parent / "noida-db"
    if not path.exists():
        raise ServiceError(f"noida-db binary not found at {path}: reinstall noida-db")
    return path


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def anvil_ready(port: int) -> bool:
    """True when anvil answers eth_chainId over JSON-RPC (an open port alone is not enough)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=0.5) as response:
            return "result" in json.loads(response.read())
    except OSError:
        return False


def broker_ready(port: int) -> bool:
    """True when the broker answers a Kafka metadata request."""
    from kafka import KafkaAdminClient

    if not port_open(port):
        return False
    try:
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=2000)
    except Exception:  # noqa: BLE001 - any failure to connect means "not ready yet"
        return False
    try:
        admin.list_topics()
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        admin.close()


@dataclass(frozen=True)
class Service:
    """One local service: how to start it, where it listens, how to tell it is healthy."""

    name: str
    port: int
    command: Callable[[Settings], list[str]]
    ready: Callable[[int], bool]
    binary_name: str
    port_variable: str
    """The environment variable that moves it to another port (named when the port is taken)."""
    timeout_s: float = 10.0
    user: str | None = None
    """The account it runs as (None: this process's); PostgreSQL refuses to run as root."""
    stop_signal: signal.Signals = signal.SIGTERM
    """What asks it to stop: SIGTERM for most; PostgreSQL's SIGTERM waits for every client to leave."""

    def pid_file(self, settings: Settings) -> Path:
        return settings.run_dir / f"{self.name}.pid"

    def log_file(self, settings: Settings) -> Path:
        return settings.log_dir / f"{self.name}.log"

    def data_path(self, settings: Settings) -> Path:
        return settings.data_dir / self.name


def _anvil_command(settings: Settings) -> list[str]:
    state = settings.data_dir / "chain" / "state.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    command = [
        str(anvil_binary()),
        "--host", "127.0.0.1",
        "--port", str(settings.anvil_port),
        "--hardfork", "cancun",
        "--state", str(state),
        "--state-interval", "60",  # also dumped on SIGTERM; frequent dumps stall a large chain
        "--silent",
    ]
    if settings.block_time > 0:
        command += ["--block-time", str(settings.block_time)]
    return command


def _noida_command(settings: Settings) -> list[str]:
    data = settings.data_dir / "broker"
    data.mkdir(parents=True, exist_ok=True)
    return [
        str(noida_binary()), "start", "--only", "kafka",
        "--data-dir", str(data), "--kafka-port", str(settings.kafka_port),
    ]


def _kafka_properties(settings: Settings, log_dir: Path, controller_port: int) -> str:
    """A single-node KRaft cluster (broker and controller in one process) on 127.0.0.1.

    The controller listener gets a fresh free port at every start: with a static voter set the port is
    not recorded in the metadata log, so nothing outside this file needs to know it. Internal topics get
    replication 1 and few partitions (50 each by default: seconds of start-up on two cores).
    """
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{settings.kafka_port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{settings.kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "4",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "background.threads": "2",
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def kafka_cluster_id() -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64, never starting with "-" (as Kafka's own
    ``Uuid.randomUuid`` ensures): one that does is read by kafka-storage as an option, and formatting fails."""
    while (cluster_id := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return cluster_id


def _kafka_command(settings: Settings) -> list[str]:
    """Writes the broker's configuration, formats its storage on first start, and returns its command."""
    data = settings.data_dir / "broker"
    log_dir = data / "log"
    config = data / "server.properties"
    data.mkdir(parents=True, exist_ok=True)
    config.write_text(_kafka_properties(settings, log_dir, free_port()))
    java, classpath = java_binary(), kafka_classpath()
    if not (log_dir / "meta.properties").exists():
        formatted = subprocess.run(
            [java, *KAFKA_JVM_FLAGS, "-cp", classpath, "kafka.tools.StorageTool", "format",
             "--cluster-id", kafka_cluster_id(), "--config", str(config), "--ignore-formatted"],
            capture_output=True, text=True, timeout=120,
        )
        if formatted.returncode != 0:
            raise ServiceError(f"formatting the Kafka storage in {log_dir} failed: {formatted.stderr.strip()}")
    return [java, *KAFKA_JVM_FLAGS, "-cp", classpath, KAFKA_MAIN, str(config)]


def broker_service(settings: Settings) -> Service:
    """The local broker `payable up` runs: Apache Kafka, or the noida-db emulator when PAYABLE_BROKER=noida."""
    if settings.broker == "noida":
        return Service("broker", settings.kafka_port, _noida_command, broker_ready, "noida-db", "PAYABLE_KAFKA_PORT")
    return Service("broker", settings.kafka_port, _kafka_command, broker_ready, KAFKA_MAIN, "PAYABLE_KAFKA_PORT",
                   timeout_s=90.0)


def local_services(settings: Settings) -> list[Service]:
    """The services that the embedded defaults need; a configured remote endpoint drops its service."""
    services = []
    if settings.local_chain:
        services.append(Service("chain", settings.anvil_port, _anvil_command, anvil_ready, "anvil",
                                "PAYABLE_ANVIL_PORT"))
    if settings.local_kafka:
        services.append(broker_service(settings))
    if settings.local_postgres:
        from payable import postgres  # it builds on this module

        services.append(postgres.service(settings))
    return services


def run_as(user: str | None) -> dict:
    """``subprocess`` keyword arguments that run a child as ``user`` with its own groups (none: as we are)."""
    if user is None:
        return {}
    account = pwd.getpwnam(user)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": os.getgrouplist(user, account.pw_gid)}


def _pid_alive(pid: int, binary_name: str) -> bool:
    """True when ``pid`` is a live process running ``binary_name`` (guards against recycled PIDs)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.split(") ", 1)[-1].startswith("Z"):
        return False
    return binary_name.encode() in cmdline


def running_pid(service: Service, settings: Settings) -> int | None:
    """The PID of our running instance, clearing a stale PID file on the way."""
    pid_file = service.pid_file(settings)
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pid_file.unlink(missing_ok=True)
        return None
    if _pid_alive(pid, service.binary_name):
        return pid
    pid_file.unlink(missing_ok=True)
    return None


def start(service: Service, settings: Settings) -> int:
    """Starts ``service`` unless ours is already running; returns its PID once healthy."""
    pid = running_pid(service, settings)
    if pid is not None:
        return pid
    if port_open(service.port):
        raise ServiceError(
            f"{service.name}: port 127.0.0.1:{service.port} is already taken by another process; "
            f"stop it or choose another port ({service.port_variable})"
        )
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    log = service.log_file(settings)
    with open(log, "ab") as log_stream:
        process = subprocess.Popen(
            service.command(settings),
            stdout=log_stream,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **run_as(service.user),
        )
    service.pid_file(settings).write_text(f"{process.pid}\n")
    deadline = time.monotonic() + service.timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            service.pid_file(settings).unlink(missing_ok=True)
            raise ServiceError(
                f"{service.name} exited with code {process.returncode} during start-up: see {log}"
            )
        if service.ready(service.port):
            return process.pid
        time.sleep(0.05)
    stop(service, settings)
    raise ServiceError(
        f"{service.name} did not become ready on 127.0.0.1:{service.port} in {service.timeout_s:g} s: see {log}"
    )


def stop(service: Service, settings: Settings, timeout_s: float = 30.0) -> bool:
    """Stops our instance by PID (SIGTERM, then SIGKILL); returns whether one was running."""
    pid = running_pid(service, settings)
    if pid is None:
        return False
    os.kill(pid, service.stop_signal)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _pid_alive(pid, service.binary_name):
        time.sleep(0.05)
    if _pid_alive(pid, service.binary_name):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # reap it when it is our child (started by this process)
        os.waitpid(pid, os.WNOHANG)
    service.pid_file(settings).unlink(missing_ok=True)
    return True


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    endpoint: str
    pid: int | None
    healthy: bool


def status(settings: Settings) -> list[ServiceStatus]:
    """Health of every configured endpoint; remote ones are probed, local ones also report their PID."""
    rows = [
        ServiceStatus(s.name, f"127.0.0.1:{s.port}", running_pid(s, settings), s.ready(s.port))
        for s in local_services(settings)
    ]
    if not settings.local_chain:
        rows.append(ServiceStatus("chain", settings.rpc_url, None, _remote_rpc_ready(settings.rpc_url)))
    if not settings.local_kafka:
        rows.append(ServiceStatus("broker", settings.kafka_bootstrap, None, _remote_kafka_ready(settings)))
    return rows


def _remote_rpc_ready(url: str) -> bool:
    from web3 import Web3

    try:
        return Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 2})).is_connected()
    except Exception:  # noqa: BLE001
        return False


def _remote_kafka_ready(settings: Settings) -> bool:
    host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
    return port_open(int(port), host or "127.0.0.1")


def up(settings: Settings) -> dict[str, int]:
    """Starts every local service; returns name -> PID. When one fails to start, the ones this call started
    are stopped again before the error goes on: no half-started stack is left running with nobody to stop it."""
    pids: dict[str, int] = {}
    started: list[Service] = []
    try:
        for service in local_services(settings):
            was_running = running_pid(service, settings) is not None
            pids[service.name] = start(service, settings)
            if not was_running:
                started.append(service)
    except BaseException:
        for service in reversed(started):
            stop(service, settings)
        raise
    return pids


def down(settings: Settings) -> list[str]:
    """Stops every local service; returns the names that were running."""
    return [service.name for service in local_services(settings) if stop(service, settings)]


@contextlib.contextmanager
def scratch_chain() -> Iterator[Settings]:
    """A throwaway local chain (anvil on a free port, no broker) over a temporary data directory, stopped and
    deleted on exit: where the benchmarks measure gas without touching a running stack."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        settings = replace(Settings.from_env(Path(tmp)), anvil_port=port, rpc_url=f"http://127.0.0.1:{port}",
                           local_chain=True, local_kafka=False)
        up(settings)
        try:
            yield settings
        finally:
            down(settings)

