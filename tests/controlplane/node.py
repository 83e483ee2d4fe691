"""A real node for ``ControlPlane(node=True)``: containerd + runc + CNI (Debian's packages),
kubelet and kube-proxy (built by ../build.sh), in network and mount namespaces of their own.

Isolation (the network rule of the e2e tests):
- The node's network namespace has no link to the host's: loopback, the CNI bridge ``cni0``
  (the node's address, :data:`NODE_IP`) and the pods' veths, nothing else, and no default route
  (:func:`routes_off_the_machine` lists any route that could leave; tests assert it is empty).
- The host reaches the node only through 127.0.0.1: kube-apiserver stays on the host's loopback
  and dials Services, pods and the kubelet through its ``cluster`` egress selector, an HTTP
  CONNECT proxy on a Unix socket (:class:`NetnsBridge`) that opens the connection inside the node's
  namespace; kubelet, kube-proxy and pods reach the apiserver through listeners the bridge opens
  inside the namespace (127.0.0.1 and :data:`NODE_IP`, the ``kubernetes`` Service's endpoint),
  forwarded to the host's 127.0.0.1.  Tests enter the namespace with ``nsenter --net``.
- Everything the node tools write at fixed paths (/var/lib/kubelet, /var/log/pods,
  /var/log/containers, /var/lib/cni, /run/containerd, /run/netns, /etc/cni/net.d, /opt/cni/bin) is
  a bind mount of the test's directory in the node's private mount namespace: the mounts end with
  it and the directories the mounts needed on the host are removed when the node stops, as are
  the node's cgroups.  Kernel settings the kubelet would change for the whole machine
  (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops) are files with the values it wants,
  bind-mounted over /proc/sys in that namespace, so it reads them and writes nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

NODE_NAME = "fluxwarden-node"
NODE_IP = "10.244.0.1"
POD_SUBNET = "10.244.0.0/24"
BRIDGE = "cni0"
PAUSE_IMAGE = "fluxwarden.local/pause:1"
CNI_BIN_DIR = Path("/usr/lib/cni")
HERE = Path(__file__).resolve().parent
NODE_TOOLS = ("containerd", "ctr", "runc", "nsenter", "unshare", "iptables", "ip", "gcc")
# Fixed paths the node tools use -> directory name under the node's work dir.
FIXED_PATHS = {
    "/var/lib/kubelet": "kubelet",
    "/var/log/pods": "pod-logs",
    "/var/log/containers": "container-logs",
    "/var/lib/cni": "cni-state",
    "/run/containerd": "containerd-run",
    "/run/netns": "netns",
    "/etc/cni/net.d": "cni-conf",
}
# What the kubelet sets machine-wide unless already so (pkg/kubelet/cm: setupKernelTunables).
KERNEL_TUNABLES = {
    "vm/overcommit_memory": "1",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
}
_CLONE_NEWNET = 0x40000000


def missing_node_tools() -> list[str]:
    """The Debian tools the node needs that are not installed (``make node-tools``)."""
    missing = [tool for tool in NODE_TOOLS if shutil.which(tool) is None]
    if not (CNI_BIN_DIR / "bridge").exists():
        missing.append("containernetworking-plugins")
    return missing


def why_no_node() -> str:
    """Why this machine cannot run the node ('' when it can)."""
    if os.geteuid() != 0:
        return "the node (containerd, kubelet) needs root"
    missing = missing_node_tools()
    if missing:
        return f"not installed: {', '.join(missing)} (make node-tools)"
    if not Path("/proc/self/ns/net").exists():
        return "no network namespaces"
    return ""


# --------------------------------------------------------------------------- namespaces


def _setns(path: str) -> None:
    """Move the calling thread (only) into the network namespace at ``path``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns {path}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def in_netns(netns: str, make: Callable[[], socket.socket]) -> socket.socket:
    """Run ``make`` on a thread inside ``netns``: the socket it returns lives there, whichever
    thread uses it afterwards."""
    result: list[socket.socket] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            _setns(netns)
            result.append(make())
        except BaseException as error:  # handed to the caller
            errors.append(error)

    thread = threading.Thread(target=run, name="in-netns", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


class NodeNamespaces:
    """A holder process (``sleep``) owning the node's network and mount namespaces, set up with
    loopback, the bridge with the node's address, the route to Services, and the bind mounts."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self._holder: subprocess.Popen[bytes] | None = None
        self._created: list[Path] = []

    @property
    def pid(self) -> int:
        assert self._holder is not None
        return self._holder.pid

    @property
    def netns(self) -> str:
        return f"/proc/{self.pid}/ns/net"

    def enter(self) -> list[str]:
        """The command prefix that runs a program inside the node's namespaces."""
        return ["nsenter", f"--target={self.pid}", "--net", "--mount", "--"]

    def start(self, service_cidr: str) -> None:
        binds = self._prepare_binds()
        ready = self.work / "namespaces.ready"
        script = [
            "set -e",
            "ip link set lo up",
            f"ip link add {BRIDGE} type bridge",
            f"ip addr add {NODE_IP}/24 dev {BRIDGE}",
            f"ip link set {BRIDGE} up",
            # Locally made connections to ClusterIPs need a route before kube-proxy's DNAT.
            f"ip route add {service_cidr} dev {BRIDGE}",
            *(f"mount --bind '{source}' '{target}'" for source, target in binds),
            f"touch '{ready}'",
            "exec sleep 2147483647",
        ]
        self._holder = subprocess.Popen(
            [
                "unshare",
                "--net",
                "--mount",
                "--propagation=private",
                "--",
                "sh",
                "-c",
                "\n".join(script),
            ],
            stdin=subprocess.DEVNULL,
            stdout=(self.work / "namespaces.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while not ready.exists():
            if self._holder.poll() is not None or time.monotonic() > deadline:
                log = (self.work / "namespaces.log").read_text(errors="replace")
                raise RuntimeError(f"node namespaces did not come up:\n{log}")
            time.sleep(0.05)

    def _prepare_binds(self) -> list[tuple[Path, Path]]:
        binds: list[tuple[Path, Path]] = []
        for fixed, name in FIXED_PATHS.items():
            source = self.work / "fixed" / name
            source.mkdir(parents=True, exist_ok=True)
            binds.append((source, self._mountpoint(Path(fixed), directory=True)))
        binds.append((CNI_BIN_DIR, self._mountpoint(Path("/opt/cni/bin"), directory=True)))
        for name, value in KERNEL_TUNABLES.items():
            source = self.work / "sysctl" / name.replace("/", ".")
            source.parent.mkdir(exist_ok=True)
            source.write_text(value + "\n")
            binds.append((source, Path("/proc/sys") / name))
        return binds

    def _mountpoint(self, path: Path, *, directory: bool) -> Path:
        """Make ``path`` exist on the host, remembering what was created (removed at stop)."""
        missing = []
        parent = path
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for item in reversed(missing):
            item.mkdir()
            self._created.append(item)
        return path

    @property
    def created(self) -> list[Path]:
        """The mount points this node had to create on the host (removed by :meth:`stop`)."""
        return list(self._created)

    def stop(self) -> None:
        if self._holder is not None and self._holder.poll() is None:
            self._holder.kill()
            self._holder.wait()
        for path in reversed(self._created):
            with contextlib.suppress(OSError):
                path.rmdir()


def routes_off_the_machine(pid: int) -> list[str]:
    """Routes in the node's network namespace that could carry a packet off the machine: any
    route through a link that is not loopback, the bridge or a pod's veth, and any default
    route."""
    enter = ["nsenter", f"--net=/proc/{pid}/ns/net", "--"]
    links = json.loads(_output([*enter, "ip", "-j", "-d", "link", "show"]))
    local = {
        link["ifname"]
        for link in links
        if link["ifname"] in ("lo", BRIDGE)
        or (link.get("linkinfo", {}).get("info_kind") == "veth" and link.get("master") == BRIDGE)
    }
    leaving = []
    for family in ("-4", "-6"):
        for route in json.loads(
            _output([*enter, "ip", "-j", family, "route", "show", "table", "all"])
        ):
            if route.get("dst") == "default" or route.get("dev") not in local:
                if route.get("type") in ("local", "broadcast", "multicast", "unreachable"):
                    continue
                leaving.append(json.dumps(route, sort_keys=True))
    return leaving


def node_links(pid: int) -> list[str]:
    """Every link of the node's network namespace: ``name kind master``."""
    enter = ["nsenter", f"--net=/proc/{pid}/ns/net", "--"]
    links = json.loads(_output([*enter, "ip", "-j", "-d", "link", "show"]))
    return [
        f"{link['ifname']} {link.get('linkinfo', {}).get('info_kind', '-')} {link.get('master', '-')}"
        for link in links
    ]


def _output(args: list[str]) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=30).stdout


# --------------------------------------------------------------------------- the bridge


class NetnsBridge:
    """Connections between the host and the node's network namespace, in-process: an HTTP
    CONNECT proxy on a Unix socket whose upstream connections are opened inside
    the namespace (the apiserver's ``cluster`` egress), and listeners inside the namespace
    forwarded to a port on the host's 127.0.0.1 (the apiserver, for the node and its pods)."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._listeners: list[socket.socket] = []
        self._stopping = threading.Event()
        self.connections = 0

    def start_proxy(self, path: Path) -> None:
        """The CONNECT proxy on a Unix socket (the apiserver's TCP transport needs mTLS)."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(128)
        self._serve(listener, self._proxy_client)

    def forward_into_host(self, address: str, port: int) -> None:
        """Listen on ``address:port`` inside the namespace; connect each to 127.0.0.1:port."""
        listener = in_netns(self.netns, lambda: socket.create_server((address, port)))

        def forward(client: socket.socket) -> None:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
            self._pump(client, upstream)

        self._serve(listener, forward)

    def _serve(self, listener: socket.socket, handle: Callable[[socket.socket], None]) -> None:
        self._listeners.append(listener)

        def accept_loop() -> None:
            while not self._stopping.is_set():
                try:
                    client, _ = listener.accept()
                except OSError:
                    return
                self.connections += 1
                threading.Thread(target=self._guarded, args=(handle, client), daemon=True).start()

        threading.Thread(target=accept_loop, name="netns-bridge", daemon=True).start()

    @staticmethod
    def _guarded(handle: Callable[[socket.socket], None], client: socket.socket) -> None:
        try:
            handle(client)
        except OSError:
            client.close()

    def _proxy_client(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 8192:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        request, _, rest = head.partition(b"\r\n\r\n")
        method, target, _ = request.split(b"\r\n", 1)[0].decode().split(" ", 2)
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or not port.isdigit():
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            client.close()
            return
        address = (host.strip("[]"), int(port))
        try:
            upstream = in_netns(self.netns, lambda: socket.create_connection(address, timeout=10))
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            client.close()
            return
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            upstream.sendall(rest)
        self._pump(client, upstream)

    @staticmethod
    def _pump(one: socket.socket, other: socket.socket) -> None:
        """Copy both ways until either side closes (this thread one way, a new one the other)."""
        one.settimeout(None)
        other.settimeout(None)

        def copy(source: socket.socket, sink: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=copy, args=(other, one), daemon=True)
        back.start()
        copy(one, other)
        back.join()
        one.close()
        other.close()

    def stop(self) -> None:
        self._stopping.set()
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self._listeners.clear()


def egress_selector_config(proxy_socket: Path) -> str:
    """The apiserver's EgressSelectorConfiguration: ``cluster`` traffic (webhooks, Services,
    pods, the kubelet) through the CONNECT proxy on a Unix socket in the work dir."""
    return f"""\
apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
  - name: cluster
    connection:
      proxyProtocol: HTTPConnect
      transport:
        uds:
          udsName: {proxy_socket}
"""


# --------------------------------------------------------------------------- configuration


def containerd_config(work: Path) -> str:
    """containerd 1.6 (CRI plugin) with state in ``work``; restrict_oom_score_adj because the
    sandbox lacks CAP_SYS_RESOURCE."""
    return f"""\
version = 2
root = "{work / "containerd-root"}"
state = "{work / "containerd-state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{work / "containerd.sock"}"
[ttrpc]
  address = "{work / "containerd.sock.ttrpc"}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{work / "containerd-opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "/etc/cni/net.d"
"""


def cni_config() -> str:
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "fluxwarden-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    # Pods route everything to the node (Services, the apiserver); the node
                    # itself has no route off the machine.
                    "isDefaultGateway": True,
                    "hairpinMode": True,
                    "ipMasq": False,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]]},
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


def kubelet_config(work: Path, ca_file: Path, cgroup_root: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{cgroup_root}",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{work / 'containerd.sock'}",
        "resolvConf": "",
        "podLogsDir": "/var/log/pods",
        "staticPodPath": "",
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%"},
        "evictionPressureTransitionPeriod": "5s",
        "syncFrequency": "5s",
        "fileCheckFrequency": "5s",
        "nodeStatusUpdateFrequency": "5s",
        "makeIPTablesUtilChains": False,
        "localStorageCapacityIsolation": True,
        "protectKernelDefaults": False,
        "shutdownGracePeriod": "0s",
    }


def kube_proxy_config(kubeconfig: Path) -> dict[str, Any]:
    """iptables mode; machine-wide conntrack settings left alone (0 = do not set)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "clusterCIDR": POD_SUBNET,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


# --------------------------------------------------------------------------- cgroups


_CGROUP_ROOT = Path("/sys/fs/cgroup")


def create_cgroup_root(name: str) -> None:
    """``/<name>`` in every cgroup v1 hierarchy (cpuset initialised from its parent)."""
    for hierarchy in _cgroup_hierarchies():
        path = hierarchy / name
        path.mkdir(exist_ok=True)
        if (hierarchy / "cpuset.cpus").exists():
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (path / knob).write_text((hierarchy / knob).read_text())


def remove_cgroup_root(name: str) -> list[str]:
    """Remove ``/<name>`` and everything below it in every hierarchy, the cgroup v2 one that
    runc also fills included (deepest first, once the processes are gone); the paths that could
    not be removed."""
    left = []
    for hierarchy in _cgroup_hierarchies(("cgroup", "cgroup2")):
        top = hierarchy / name
        if not top.exists():
            continue
        for directory in sorted(_subdirs(top), key=lambda p: len(p.parts), reverse=True):
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                left.append(str(directory))
    return left


def _cgroup_hierarchies(kinds: tuple[str, ...] = ("cgroup",)) -> list[Path]:
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    return [Path(line.split()[1]) for line in mounts if line.split()[2] in kinds]


def _subdirs(top: Path) -> Iterator[Path]:
    yield top
    for path in top.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            yield path


# --------------------------------------------------------------------------- the node


def pause_image(work: Path) -> Path:
    """The sandbox image: pause.c compiled static, as a one-layer OCI archive."""
    from image.build import write_archive

    rootfs = work / "pause-rootfs"
    rootfs.mkdir()
    subprocess.run(
        ["gcc", "-static", "-Os", "-o", str(rootfs / "pause"), str(HERE / "node" / "pause.c")],
        check=True,
        capture_output=True,
    )
    archive = work / "pause.tar"
    config: dict[str, object] = {"Entrypoint": ["/pause"], "User": "65535:65535"}
    write_archive(config, rootfs, PAUSE_IMAGE, archive)
    shutil.rmtree(rootfs)
    return archive


class NodeProcesses:
    """What ``ControlPlane(node=True)`` adds: the namespaces and the bridge (before the
    apiserver, whose egress goes through the bridge), then containerd, the images, kubelet and
    kube-proxy (after it).  ``spawn(name, args)`` starts a logged process (the control plane's)."""

    def __init__(self, work: Path, bin_dir: Path, images: list[Path]) -> None:
        self.work = work / "node"
        self.work.mkdir()
        self.bin_dir = bin_dir
        self.images = images
        self.namespaces = NodeNamespaces(self.work)
        self.bridge: NetnsBridge | None = None
        self.cgroup_root = f"fluxwarden-node-{os.getpid()}-{int(time.time())}"
        self.left_behind: list[str] = []

    def before_apiserver(self, service_cidr: str) -> list[str]:
        """Start the namespaces and the bridge; the apiserver's extra arguments."""
        self.namespaces.start(service_cidr)
        self.bridge = NetnsBridge(self.namespaces.netns)
        proxy_socket = self.work / "egress.sock"
        self.bridge.start_proxy(proxy_socket)
        egress = self.work / "egress-selector.yaml"
        egress.write_text(egress_selector_config(proxy_socket))
        return [
            f"--egress-selector-config-file={egress}",
            f"--advertise-address={NODE_IP}",
            "--endpoint-reconciler-type=lease",
            "--kubelet-preferred-address-types=InternalIP",
            # logs, exec: the kubelet accepts client certificates of the control plane's CA.
            f"--kubelet-client-certificate={self.work.parent / 'admin.crt'}",
            f"--kubelet-client-key={self.work.parent / 'admin.key'}",
        ]

    def after_apiserver(
        self,
        apiserver_port: int,
        kubeconfig: Path,
        ca_file: Path,
        spawn: Callable[[str, list[str]], None],
    ) -> None:
        assert self.bridge is not None
        for address in ("127.0.0.1", NODE_IP):
            self.bridge.forward_into_host(address, apiserver_port)
        (self.work / "fixed" / "cni-conf" / "10-fluxwarden.conflist").write_text(cni_config())
        config = self.work / "containerd.toml"
        config.write_text(containerd_config(self.work))
        enter = self.namespaces.enter()
        spawn("containerd", [*enter, "containerd", f"--config={config}"])
        self._wait(lambda: (self.work / "containerd.sock").exists(), "containerd socket")
        for archive in [pause_image(self.work), *self.images]:
            self.ctr("images", "import", str(archive))
        create_cgroup_root(self.cgroup_root)
        kubelet_yaml = self.work / "kubelet.yaml"
        kubelet_yaml.write_text(json.dumps(kubelet_config(self.work, ca_file, self.cgroup_root)))
        spawn(
            "kubelet",
            [
                *enter,
                str(self.bin_dir / "kubelet"),
                f"--config={kubelet_yaml}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.work / 'fixed' / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
        )
        proxy_yaml = self.work / "kube-proxy.yaml"
        proxy_yaml.write_text(json.dumps(kube_proxy_config(kubeconfig)))
        spawn("kube-proxy", [*enter, str(self.bin_dir / "kube-proxy"), f"--config={proxy_yaml}"])

    def ctr(self, *args: str) -> str:
        """``ctr`` against the node's containerd, namespace k8s.io (the CRI's)."""
        address = str(self.work / "containerd.sock")
        command = ["ctr", "--address", address, "--namespace", "k8s.io", *args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    @staticmethod
    def _wait(ready: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready after {timeout:.0f}s")
            time.sleep(0.1)

    def stop(self) -> None:
        """After the node's processes are gone: pods' leftovers, the namespaces, the cgroups."""
        if self.bridge is not None:
            self.bridge.stop()
        self._kill_shims()
        self.namespaces.stop()
        self.left_behind = remove_cgroup_root(self.cgroup_root)

    def leftovers(self) -> list[str]:
        """What of the node is still on the machine (after :meth:`stop`): cgroups, the mount
        points it created, mounts of its work dir, processes of its containerd."""
        found = [
            str(hierarchy / self.cgroup_root)
            for hierarchy in _cgroup_hierarchies(("cgroup", "cgroup2"))
            if (hierarchy / self.cgroup_root).exists()
        ]
        found += [str(path) for path in self.namespaces.created if path.exists()]
        found += [
            line
            for line in Path("/proc/self/mounts").read_text().splitlines()
            if str(self.work) in line
        ]
        address = str(self.work / "containerd.sock").encode()
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if proc.name.isdigit() and address in (proc / "cmdline").read_bytes():
                    found.append(f"process {proc.name}")
        return found

    def _kill_shims(self) -> None:
        """containerd-shim-runc-v2 processes outlive containerd: kill the node's (and so their
        containers) by the cgroup root and by their containerd address."""
        address = str(self.work / "containerd.sock")
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                cgroups = (proc / "cgroup").read_text()
                if address.encode() in cmdline or f"/{self.cgroup_root}/" in cgroups:
                    os.kill(int(proc.name), 9)
        time.sleep(0.5)
