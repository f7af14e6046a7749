"""A mount's ``options`` as the kernel takes them: mount(8)'s words split into per-mount
attributes (``mount_setattr``/``fsmount``), superblock flags and filesystem parameters
(``fsconfig``), propagation and the spec's recursive options.

Model: runc's ``libcontainer/specconv`` and crun's ``linux.c`` option tables.  The words are
parsed once, when a plan is compiled; the executor only carries out the result.
"""

from __future__ import annotations

from corral.errors import NotSupportedError
from corral.record import Record

# mount(2) flags (MS_*), as mount(8)'s options name them.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_I_VERSION = 1 << 23
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

# option -> (clears the flag?, flag).  Later options win over earlier ones, as in mount(8).
FLAG_OPTIONS: dict[str, tuple[bool, int]] = {
    "defaults": (False, 0),
    "ro": (False, MS_RDONLY), "rw": (True, MS_RDONLY),
    "suid": (True, MS_NOSUID), "nosuid": (False, MS_NOSUID),
    "dev": (True, MS_NODEV), "nodev": (False, MS_NODEV),
    "exec": (True, MS_NOEXEC), "noexec": (False, MS_NOEXEC),
    "sync": (False, MS_SYNCHRONOUS), "async": (True, MS_SYNCHRONOUS),
    "dirsync": (False, MS_DIRSYNC),
    "remount": (False, MS_REMOUNT),
    "mand": (False, MS_MANDLOCK), "nomand": (True, MS_MANDLOCK),
    "atime": (True, MS_NOATIME), "noatime": (False, MS_NOATIME),
    "diratime": (True, MS_NODIRATIME), "nodiratime": (False, MS_NODIRATIME),
    "relatime": (False, MS_RELATIME), "norelatime": (True, MS_RELATIME),
    "strictatime": (False, MS_STRICTATIME), "nostrictatime": (True, MS_STRICTATIME),
    "lazytime": (False, MS_LAZYTIME), "nolazytime": (True, MS_LAZYTIME),
    "iversion": (False, MS_I_VERSION), "noiversion": (True, MS_I_VERSION),
    "symfollow": (True, MS_NOSYMFOLLOW), "nosymfollow": (False, MS_NOSYMFOLLOW),
    "silent": (False, MS_SILENT), "loud": (True, MS_SILENT),
    "bind": (False, MS_BIND), "rbind": (False, MS_BIND | MS_REC),
}

PROPAGATION_OPTIONS: dict[str, int] = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}

# mount_setattr(2) / fsmount(2) attributes (linux/mount.h).
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70  # the atime mode field: relatime (0), noatime, strictatime
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

# The spec's recursive options (config.md, since 1.1): option -> (clears?, MOUNT_ATTR_*),
# applied with mount_setattr(AT_RECURSIVE) once the mount is in place, as runc does.
RECURSIVE_OPTIONS: dict[str, tuple[bool, int]] = {
    "rro": (False, MOUNT_ATTR_RDONLY), "rrw": (True, MOUNT_ATTR_RDONLY),
    "rnosuid": (False, MOUNT_ATTR_NOSUID), "rsuid": (True, MOUNT_ATTR_NOSUID),
    "rnodev": (False, MOUNT_ATTR_NODEV), "rdev": (True, MOUNT_ATTR_NODEV),
    "rnoexec": (False, MOUNT_ATTR_NOEXEC), "rexec": (True, MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, MOUNT_ATTR_NODIRATIME), "rdiratime": (True, MOUNT_ATTR_NODIRATIME),
    "rrelatime": (False, MOUNT_ATTR_RELATIME), "rnorelatime": (True, MOUNT_ATTR_RELATIME),
    "rnoatime": (False, MOUNT_ATTR_NOATIME), "ratime": (True, MOUNT_ATTR_NOATIME),
    "rstrictatime": (False, MOUNT_ATTR_STRICTATIME),
    "rnostrictatime": (True, MOUNT_ATTR_STRICTATIME),
    "rnosymfollow": (False, MOUNT_ATTR_NOSYMFOLLOW), "rsymfollow": (True, MOUNT_ATTR_NOSYMFOLLOW),
}

#: idmapped mount options (the idmapped copy is made by the launcher, before the namespaces).
IDMAP_OPTIONS = frozenset({"idmap", "ridmap"})

# Options runc/crun know that need path tricks: refused, never ignored.
UNSUPPORTED_OPTIONS = frozenset({"copy-symlink", "src-nofollow", "dest-nofollow"})

# mount(2) flags that are attributes of the mount (mount_setattr), not of the superblock.
_MOUNT_FLAGS = ((MS_RDONLY, MOUNT_ATTR_RDONLY), (MS_NOSUID, MOUNT_ATTR_NOSUID),
                (MS_NODEV, MOUNT_ATTR_NODEV), (MS_NOEXEC, MOUNT_ATTR_NOEXEC),
                (MS_NODIRATIME, MOUNT_ATTR_NODIRATIME), (MS_NOSYMFOLLOW, MOUNT_ATTR_NOSYMFOLLOW))
# Superblock flags and the fsconfig flag that sets each (fs/fs_context.c's common table).
SUPERBLOCK_FLAGS = ((MS_SYNCHRONOUS, "sync"), (MS_DIRSYNC, "dirsync"),
                    (MS_LAZYTIME, "lazytime"), (MS_MANDLOCK, "mand"))


class MountOptions(Record):
    """A mount's ``options`` split the way the kernel needs them.

    flags: MS_* to set; cleared: MS_* the options explicitly turn off (rw, suid, atime...);
    propagation: MS_* propagation changes, one each after the mount itself; data: the
    filesystem's own parameters (mode=755, size=65536k, ...); rec_set, rec_clear:
    MOUNT_ATTR_* of the recursive options (rro, ...), and recursive: their names, for errors.
    """

    flags: int = 0
    cleared: int = 0
    propagation: tuple[int, ...] = ()
    data: tuple[str, ...] = ()
    rec_set: int = 0
    rec_clear: int = 0
    recursive: tuple[str, ...] = ()
    tmpcopyup: bool = False

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & MS_BIND)


def parse_mount_options(options, field: str = "options") -> MountOptions:
    """Parse OCI / mount(8) options.  ``field`` names them in errors (``mounts[3].options``)."""
    flags = cleared = rec_set = rec_clear = 0
    propagation: list[int] = []
    data: list[str] = []
    recursive: list[str] = []
    tmpcopyup = False
    for option in options:
        if option == "tmpcopyup":
            tmpcopyup = True  # a tmpfs starts with a copy of what it covers (runc, crun)
        elif option in FLAG_OPTIONS:
            clear, flag = FLAG_OPTIONS[option]
            if clear:
                flags &= ~flag
                cleared |= flag
            else:
                flags |= flag
                cleared &= ~flag
        elif option in PROPAGATION_OPTIONS:
            propagation.append(PROPAGATION_OPTIONS[option])
        elif option in RECURSIVE_OPTIONS:
            clear, attr = RECURSIVE_OPTIONS[option]
            recursive.append(option)
            if clear:
                rec_clear |= attr
                rec_set &= ~attr
            else:
                rec_set |= attr
                rec_clear &= ~attr
                if attr & MOUNT_ATTR__ATIME == attr:
                    # mount_setattr(2): an atime mode is set by clearing the whole field
                    rec_clear |= MOUNT_ATTR__ATIME
        elif option in IDMAP_OPTIONS:
            continue
        elif option in UNSUPPORTED_OPTIONS:
            raise NotSupportedError(f"{field}: {option}")
        elif option.startswith("x-"):
            continue  # mount(8): comments for userspace tools, never given to the kernel
        elif option:
            data.append(option)
    return MountOptions(flags, cleared, tuple(propagation), tuple(data), rec_set, rec_clear,
                        tuple(recursive), tmpcopyup)


def mount_attributes(flags: int, cleared: int = 0) -> tuple[int, int]:
    """(MOUNT_ATTR_* to set, to clear) for MS_* flags set and explicitly cleared."""
    attr_set = attr_clr = 0
    for ms, attr in _MOUNT_FLAGS:
        if flags & ms:
            attr_set |= attr
        elif cleared & ms:
            attr_clr |= attr
    if flags & MS_NOATIME:
        attr_set, attr_clr = attr_set | MOUNT_ATTR_NOATIME, attr_clr | MOUNT_ATTR__ATIME
    elif flags & MS_STRICTATIME:
        attr_set, attr_clr = attr_set | MOUNT_ATTR_STRICTATIME, attr_clr | MOUNT_ATTR__ATIME
    elif flags & MS_RELATIME or cleared & (MS_NOATIME | MS_STRICTATIME):
        attr_clr |= MOUNT_ATTR__ATIME  # relatime: the mode field's zero
    return attr_set, attr_clr


def superblock_flags(flags: int) -> list[str]:
    """The fsconfig flags for MS_* superblock flags (a new filesystem's sync, dirsync...)."""
    return [name for ms, name in SUPERBLOCK_FLAGS if flags & ms]


def needs_setattr(opts: MountOptions) -> bool:
    """A bind mount keeps its source's attributes unless a per-mount flag was named."""
    return bool(opts.flags & ~(MS_BIND | MS_REC | MS_REMOUNT) or opts.cleared)
