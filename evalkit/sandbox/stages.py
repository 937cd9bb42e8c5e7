"""Source code of the two small programs that run on the far side of the sandbox boundary.

Why they are strings: both are run with ``python -c`` so that no helper file has to be made
visible inside the sandbox, and the launcher runs with ``-I -S`` (no site, no environment
variables) so that nothing on the host can change what it does before limits are in place.

LAUNCHER (runs first; as root when evalkit runs as root):
  1. writes ``L`` to the report pipe, so the parent can tell "the sandbox started" from
     "bwrap/python could not even start" (status "error");
  2. mechanism "unshare" only: enters new mount/net/ipc/uts/pid (and, when not root, user)
     namespaces, builds a fresh read-only root on a tmpfs from a short list of binds, mounts a
     size-limited tmpfs on /tmp and /dev/shm and chroots into it. It forks twice: the
     outside half only waits and relays the exit status (dying by the same signal); inside,
     a small init (pid 1, stays root, reaps orphans) waits for the program (pid 2, as under
     bwrap) and exits with 128+N if the program died by signal N;
  3. sets the rlimits (CPU, address space, file size, process count, no core files);
  4. when a uid is given (evalkit runs as root): no_new_privs, empties the capability
     bounding and ambient sets, and switches to that uid/gid with no supplementary groups;
  5. asks the kernel for SIGKILL when its parent dies, closes every fd except 0-2 and the
     three it was handed, and execs the bootstrap.
  Any failure is written as ``E<message>`` to the report pipe and the launcher exits 125.

BOOTSTRAP (runs the model's code, as the sandbox uid):
  reads the 32-byte nonce from its pipe and closes it, reads the program from the inherited
  fd, writes it to ./program.py (for readable tracebacks), writes ``B`` to the report pipe,
  execs the program as ``__main__`` and only if that returns normally - in the original
  process, not in a forked child - writes the nonce to the report pipe and ``os._exit(0)``.
  SystemExit, os._exit, a crash or a kill before the end therefore leave no nonce.
"""

from __future__ import annotations

__all__ = ["BOOTSTRAP", "LAUNCHER", "SETUP_ERROR_CODE"]

SETUP_ERROR_CODE = 125  # the launcher's exit status when its set-up fails (see ``fail``)

LAUNCHER = r'''
import ctypes, json, os, resource, signal, sys
C = json.loads(sys.argv[1])
REPORT = C["report_fd"]
os.write(REPORT, b"L")
libc = ctypes.CDLL(None, use_errno=True)
CHARP, ULONG = ctypes.c_char_p, ctypes.c_ulong
libc.mount.argtypes = [CHARP, CHARP, CHARP, ULONG, CHARP]
libc.unshare.argtypes = [ctypes.c_int]
libc.prctl.argtypes = [ctypes.c_int, ULONG, ULONG, ULONG, ULONG]
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
NEWNS, NEWUTS, NEWIPC = 0x20000, 0x4000000, 0x8000000
NEWUSER, NEWPID, NEWNET = 0x10000000, 0x20000000, 0x40000000
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 38, 47

def fail(msg):
    try:
        os.write(REPORT, b"E" + msg.encode("utf-8", "replace")[:2000])
    finally:
        os._exit(125)

def check(ret, what):
    if ret != 0:
        fail("%s: %s" % (what, os.strerror(ctypes.get_errno())))

def enc(s):
    return None if s is None else s.encode()

def mount(src, dst, fstype, flags, data=None):
    check(libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)), "mount " + dst)

def locked_flags(path):
    # Re-mounting read-only inside a user namespace must keep the flags the kernel locked.
    f = os.statvfs(path).f_flag
    out = 0
    for st, ms in ((2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME),
                   (2048, MS_NODIRATIME), (4096, MS_RELATIME)):
        if f & st:
            out |= ms
    return out

def write(path, text):
    with open(path, "w") as fh:
        fh.write(text)

def enter_namespaces():
    uid, gid = os.getuid(), os.getgid()
    flags = NEWNS | NEWIPC | NEWUTS | NEWPID | (0 if C["network"] else NEWNET)
    if uid != 0:
        flags |= NEWUSER
    check(libc.unshare(flags), "unshare")
    if uid != 0:
        write("/proc/self/setgroups", "deny")
        write("/proc/self/uid_map", "%d %d 1" % (uid, uid))
        write("/proc/self/gid_map", "%d %d 1" % (gid, gid))

def wait_and_mirror(pid, as_init):
    # Wait for ``pid`` (as the namespace's init: reaping every orphan too), then exit the way
    # it did. An init cannot kill itself with a signal, so it reports 128+N like bwrap does.
    for fd in (C["nonce_fd"], C["prog_fd"], REPORT):
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    while True:
        try:
            got, status = os.wait() if as_init else os.waitpid(pid, 0)
        except InterruptedError:
            continue
        if got == pid:
            break
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if not as_init:
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
            os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status) & 255)

def bind_into(root, src, readonly=True):
    dst = root + src
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    mount(src, dst, None, MS_BIND | MS_REC)
    if readonly:
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | locked_flags(src)
        mount(None, dst, None, flags)

def build_root():
    root = C["newroot"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    os.makedirs(root + "/dev", mode=0o755)
    for dev in ("null", "zero", "full", "random", "urandom"):
        bind_into(root, "/dev/" + dev, readonly=False)
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink("/proc/self/fd/%d" % i, root + "/dev/" + name)
    os.symlink("/proc/self/fd", root + "/dev/fd")
    tmpfs_opts = "size=%d,mode=1777" % C["tmpfs_bytes"]
    for d in ("/dev/shm", "/tmp"):  # before the binds: an interpreter under /tmp stays visible
        os.makedirs(root + d, exist_ok=True)
        mount("tmpfs", root + d, "tmpfs", MS_NOSUID | MS_NODEV, tmpfs_opts)
    for src in C["ro_binds"]:
        if os.path.exists(src):
            bind_into(root, src)
    for name, target in C["symlinks"]:
        os.symlink(target, root + name)
    os.makedirs(root + "/proc", exist_ok=True)
    proc_flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    if libc.mount(b"proc", enc(root + "/proc"), b"proc", proc_flags, None) != 0:
        pass  # e.g. a user namespace under a masked /proc: the program simply has no /proc
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
    os.chroot(root)

def set_limits():
    r = resource
    soft_hard = {
        r.RLIMIT_CPU: (C["cpu_s"], C["cpu_s"] + 1),
        r.RLIMIT_AS: (C["as_bytes"], C["as_bytes"]),
        r.RLIMIT_FSIZE: (C["fsize_bytes"], C["fsize_bytes"]),
        r.RLIMIT_NPROC: (C["nproc"], C["nproc"]),
        r.RLIMIT_CORE: (0, 0),
    }
    for res, (soft, hard) in soft_hard.items():
        cur_hard = r.getrlimit(res)[1]
        if cur_hard != r.RLIM_INFINITY and os.getuid() != 0:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        try:
            r.setrlimit(res, (soft, hard))
        except (ValueError, OSError) as e:
            fail("setrlimit %s: %s" % (res, e))

def drop_privileges(uid):
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    for cap in range(C["cap_last_cap"] + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    libc.prctl(PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (uid, uid, uid):
        fail("uid switch did not stick")
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        fail("could regain root after dropping privileges")

def main():
    if C["unshare"]:
        enter_namespaces()
        pid = os.fork()
        if pid:
            wait_and_mirror(pid, as_init=False)  # outside: relay the status to the runner
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        os.setsid()  # kill(0, ...) from the program must not reach the relay outside
        build_root()
        pid = os.fork()
        if pid:
            wait_and_mirror(pid, as_init=True)  # pid 1: the program is pid 2, as under bwrap
    os.chdir(C["cwd"])
    set_limits()
    if C["uid"] is not None:
        drop_privileges(C["uid"])
    else:
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)  # a uid switch clears it
    keep = sorted({C["nonce_fd"], REPORT, C["prog_fd"]})
    low = 3
    for fd in keep:
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)
    argv = [C["python"], "-s", "-B", "-c", C["bootstrap"],
            str(C["nonce_fd"]), str(REPORT), str(C["prog_fd"])]
    try:
        os.execv(C["python"], argv)
    except OSError as e:
        fail("exec %s: %s" % (C["python"], e))

try:
    main()
except SystemExit:
    raise
except BaseException as e:
    fail("launcher: %r" % (e,))
'''

BOOTSTRAP = r'''
def _evalkit_bootstrap():
    import os, sys, types
    nonce_fd, report_fd, prog_fd = (int(a) for a in sys.argv[1:4])
    nonce = b""
    while len(nonce) < 32:
        chunk = os.read(nonce_fd, 32 - len(nonce))
        if not chunk:
            break
        nonce += chunk
    os.close(nonce_fd)
    with os.fdopen(prog_fd, "rb") as fh:
        source = fh.read()
    path = os.path.join(os.getcwd(), "program.py")
    try:
        with open(path, "wb") as fh:
            fh.write(source)
    except OSError:
        path = "program.py"
    main_pid = os.getpid()

    def finish(secret=nonce):
        if os.getpid() != main_pid:  # a forked child that fell through: never reports
            os._exit(0)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os.write(report_fd, secret)
        os._exit(0)

    del nonce
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__builtins__ = __builtins__
    sys.modules["__main__"] = module
    sys.argv = [path]
    os.write(report_fd, b"B")
    code = compile(source, path, "exec", dont_inherit=True)
    del source
    exec(code, module.__dict__)
    return finish

_evalkit_bootstrap()()
'''
