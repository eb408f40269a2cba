"""Node configuration as a msgspec Struct (no I/O); loading and precedence: llmnode.config."""

from __future__ import annotations

import msgspec

DEFAULT_PORT = 7946
DEFAULT_BEACON_PORT = 7947


class DeclaredCapacity(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Capacity declared by hand (testing the scheduler without GPUs)."""

    gpus: int = 0
    gpu_memory_mb: int = 0
    cpu_cores: int = 0
    ram_mb: int = 0


class AutoscaleConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``--auto`` policy (llmnode.nodes.placement.autoscale.AutoscalePolicy's thresholds)."""

    add_wait_ms: float = 500.0
    add_window_s: float = 30.0
    remove_wait_ms: float = 50.0
    quiet_s: float = 300.0
    cooldown_s: float = 60.0


class NodeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str = ""
    data_dir: str = ""
    listen: str = f"tcp://0.0.0.0:{DEFAULT_PORT}"
    advertise: str = ""
    join: list[str] = []
    beacon: bool = True
    beacon_port: int = DEFAULT_BEACON_PORT
    models: list[str] = []
    agents: list[str] = []
    model_store: str = ""
    control: str = ""  # default ipc://<data_dir>/control.sock
    log_level: str = "info"
    log_json: bool | None = None
    probe_interval: float = 1.0  # every membership timing scales with it (memberlist LAN: 1 s)
    fault_delay_ms: float = 0.0  # delay every outgoing frame (fault injection; no netem here)
    fault_slow_ms: float = 0.0  # delay every chunk and result this node serves (a slow node)
    state_refresh_s: float = 2.0  # how often capabilities are checked for a change to gossip
    record_refresh_s: float = 600.0  # the record is re-signed at least this often, unchanged
    allowlist: list[str] = []  # node ids (base32) admitted; empty: anyone holding the mesh key
    model_slots: int = 0  # parallel streams per model; 0: the runtime's default
    model_queue_limit: int = 64
    hedge: bool = False  # send a slow idempotent request's second copy to another node
    capacity: DeclaredCapacity | None = None
    http: str = ""  # HOST:PORT of the OpenAI API; "": 127.0.0.1:7949 if free; "off": none
    autoscale: AutoscaleConfig = AutoscaleConfig()
    model_transfer_mb_s: float = 100.0  # pace of model files sent to and fetched from peers
    metrics: bool = True  # histograms and traffic counts; false only to measure their cost
