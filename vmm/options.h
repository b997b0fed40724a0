/*
 * vmm/options.h — keel-vmm's command line, in QEMU's vocabulary.
 *
 * vmm_options_parse() turns argv into a VmmOptions and validates it as a
 * whole (sizes, enum values, -drive iothread= naming an -object iothread,
 * -device virtio-blk-pci,drive= naming an if=none drive).  It never prints
 * and never exits: on a bad command line it returns -1 with every problem
 * of the line in the caller's buffer, one '\n'-separated line each naming
 * its option (all of them, not just the first, so one run shows what to fix;
 * a refused option is not applied, so no derived problem follows from it).
 * main() prints each line and exits 1; tests check the text.
 *
 * Ownership: the options own their strings (g_strdup); free them with
 * vmm_options_free().  The struct is plain data: the virtio-blk work reads
 * VmmDrive as it is.
 *
 * Thread rules: call from one thread (main() at start-up, or a test).
 */
#ifndef KEEL_VMM_OPTIONS_H
#define KEEL_VMM_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "block/block-backend.h"
#include "vmm/kvm.h"
#include "vmm/topology.h"

#define VMM_MAX_DRIVES 16
#define VMM_MAX_IOTHREADS 16

#define VMM_DEFAULT_RAM_SIZE (128ull << 20)  /* QEMU's default */
#define VMM_MIN_RAM_SIZE (8ull << 20)        /* room for loader structures */
#define VMM_MAX_RAM_SIZE (1ull << 40)

typedef enum VmmDriveAio {
    VMM_AIO_THREADS,        /* thread pool (QEMU's default) */
    VMM_AIO_NATIVE,         /* linux-aio */
    VMM_AIO_IO_URING,
} VmmDriveAio;

typedef enum VmmDriveCache {
    VMM_CACHE_WRITEBACK,    /* page cache, flush honoured (default) */
    VMM_CACHE_NONE,         /* O_DIRECT, flush honoured */
    VMM_CACHE_DIRECTSYNC,   /* O_DIRECT + O_DSYNC */
    VMM_CACHE_UNSAFE,       /* page cache, flush ignored */
    VMM_CACHE_WRITETHROUGH, /* page cache, each write stable before it completes */
} VmmDriveCache;

/* werror=/rerror=: what a failed guest request does (QEMU's BlockdevOnError).
 * REPORT fails it to the guest; IGNORE completes it as if it worked; STOP
 * pauses the VM (run state io-error) and keeps the request, so `cont`
 * retries it; ENOSPC stops on ENOSPC and reports anything else. */
typedef enum VmmErrorPolicy {
    VMM_ERROR_REPORT,
    VMM_ERROR_IGNORE,
    VMM_ERROR_STOP,
    VMM_ERROR_ENOSPC,
} VmmErrorPolicy;

/* The most queues a virtio-blk device has (vmm/virtio-core.h agrees). */
#define VMM_MAX_QUEUES 16

/* One entry of -device virtio-blk-pci's iothread-vq-mapping (QEMU 9):
 * an iothread and, optionally, the queues it serves. */
typedef struct VmmVqMapping {
    char *iothread;
    int vqs[VMM_MAX_QUEUES];
    int nr_vqs;             /* 0: round-robin (no "vqs" given) */
} VmmVqMapping;

/*
 * A disk: from -drive, or from -blockdev nodes (a file/host_device node, or
 * a raw node over one, which takes the file node's entry over: id is then
 * the raw node's node-name and node_name the file node's).
 */
typedef struct VmmDrive {
    char *file;             /* required */
    char *id;               /* optional; required for if=none; a -blockdev node-name */
    char *node_name;        /* -blockdev: the file node under a raw node, or NULL */
    char *dev_id;           /* -device ...,id= (for messages), or NULL */
    char *iothread;         /* an -object iothread id, or NULL (main loop) */
    char *serial;           /* virtio-blk GET_ID string (≤ 20 bytes), or NULL */
    char *inject;           /* error-injection rules (block/blkdebug.h), ';'-joined, or NULL */
    VmmDriveAio aio;
    VmmDriveCache cache;
    bool readonly;
    bool auto_read_only;    /* -blockdev auto-read-only=on: read-only if it cannot write */
    bool no_flush;          /* cache.no-flush=on with cache.direct=on */
    bool discard_unmap;     /* discard=unmap|on */
    KeelBlkDetectZeroes detect_zeroes;
    KeelBlkLocking locking; /* file.locking= / -blockdev locking= */
    bool probe_format;      /* -drive without format=: probe, refuse non-raw magic */
    bool host_device;       /* -blockdev driver=host_device: must be a block device */
    bool from_blockdev;     /* made by -blockdev (always explicit raw) */
    bool raw_node;          /* a -blockdev driver=raw node sits on top */
    int64_t offset, size;   /* raw node offset= / size= (0: to the end) */
    uint32_t logical_block_size, physical_block_size;   /* 0: from the image */
    int pci_slot;           /* -device addr=; -1: the next free slot */
    bool if_none;           /* if=none: attached by -device virtio-blk-pci */
    bool attached;          /* if=virtio, or named by a -device (set by the parser) */
    VmmErrorPolicy werror;  /* default enospc, as QEMU's -drive */
    VmmErrorPolicy rerror;  /* default report */
    /* -device num-queues=N (1..VMM_MAX_QUEUES); unset: one per vCPU, as
     * QEMU (-smp's cpus, at most VMM_MAX_QUEUES).  Set by the parser. */
    int num_queues;
    /* iothread-vq-mapping (then iothread= is not set): the entries, and
     * the entry serving each queue (computed by the parser, round-robin
     * over the entries when they have no "vqs"). */
    VmmVqMapping *vq_map;
    int nr_vq_map;
    int queue_map[VMM_MAX_QUEUES];
} VmmDrive;

/* -chardev BACKEND,id=ID,... and the legacy spellings of -serial/-qmp/
 * -monitor (stdio, mon:stdio, file:P, pipe:P, unix:P,server=on,wait=off,
 * null), which define an implicit chardev (vmm/chardev.h opens them). */
typedef enum VmmChardevBackend {
    VMM_CHR_NULL,
    VMM_CHR_STDIO,
    VMM_CHR_FILE,
    VMM_CHR_PIPE,           /* PATH.in / PATH.out, else PATH both ways */
    VMM_CHR_SOCKET,         /* unix stream socket */
} VmmChardevBackend;

typedef struct VmmChardevSpec {
    char *id;
    VmmChardevBackend backend;
    char *path;             /* file, pipe, socket path */
    bool server;            /* socket: listen (else connect) */
    bool wait;              /* socket server: block at start-up for a client */
    bool mux;               /* mux=on (mon:...): serial and monitor share it */
    bool signal;            /* stdio: ^C stops keel-vmm (signal=on); off for mon:stdio */
    bool append;            /* file: append=on */
    int users;              /* front ends attached (set by the parser) */
} VmmChardevSpec;

/* -qmp, -monitor, -mon chardev=ID,mode=control|readline[,pretty=on]. */
typedef struct VmmMonitorSpec {
    char *chardev;          /* a chardev id */
    bool control;           /* QMP (mode=control) or HMP (readline) */
    bool pretty;
} VmmMonitorSpec;

#define VMM_MAX_CHARDEVS 16
#define VMM_MAX_MONITORS 8

/* -object iothread,id=ID[,poll-max-ns=N][,poll-grow=N][,poll-shrink=N]:
 * the tuning knobs mean what QEMU's do (loop/aio.h,
 * keel_aio_context_set_poll_params); -1 keeps the iothread's default. */
typedef struct VmmIOThread {
    char *id;
    int64_t poll_max_ns, poll_grow, poll_shrink;
} VmmIOThread;

typedef struct VmmOptions {
    uint64_t ram_size;      /* bytes, a multiple of 4 KiB */
    bool ram_size_given;    /* -m on the command line */
    VmRamBacking ram_backing;   /* -machine memory-backend=, or VM_RAM_AUTO */
    char *mem_backend_id;   /* the -object memory-backend-* id, or NULL */
    uint64_t mem_backend_size;  /* its size=, or 0 */
    char *machine_mem_backend;  /* -machine memory-backend=ID, or NULL */
    CpuTopology smp;        /* -smp, with QEMU's rules for the values not given */
    char *cpu_model;        /* -cpu host|max (both: KVM's supported CPUID), or NULL */
    char *kernel;
    char *initrd;
    char *append;
    VmmDrive drives[VMM_MAX_DRIVES];
    int nr_drives;
    VmmIOThread iothreads[VMM_MAX_IOTHREADS];   /* -object iothread,id=... */
    int nr_iothreads;
    bool serial_stdio;      /* COM1 is on a stdio chardev (the default) */
    char *serial_chardev;   /* COM1's chardev id, or NULL: -serial none */
    VmmChardevSpec chardevs[VMM_MAX_CHARDEVS];
    int nr_chardevs;
    VmmMonitorSpec monitors[VMM_MAX_MONITORS];
    int nr_monitors;
    /* Lifecycle (vmm/main.c). */
    char *name;             /* -name NAME (query-name), or NULL */
    bool debug_threads;     /* -name ...,debug-threads=on: QEMU's thread names */
    char *pidfile;          /* -pidfile PATH */
    bool daemonize;         /* -daemonize */
    bool start_paused;      /* -S */
    bool no_shutdown;       /* -no-shutdown: stay (paused) after a guest shutdown */
    bool machine_none;      /* -machine none: no guest, only the control plane */
    bool check_args;        /* --check-args: parse, report, exit */
    bool want_help;
    bool want_version;
    bool want_features;
} VmmOptions;

/* Parses argv[1..argc-1] into @opts (which it initialises).  Returns 0, or
 * -1 with a one-line message (no trailing newline) in @err and @opts freed
 * (vmm_options_free on it again is harmless). */
int vmm_options_parse(VmmOptions *opts, int argc, char **argv, char *err, size_t errlen);

void vmm_options_free(VmmOptions *opts);

/* Parses a QEMU size ("512", "512M", "2G", "1048576K"; a bare number means
 * MiB like -m does).  Returns 0 or -1. */
int vmm_parse_size_mib(const char *s, uint64_t *bytes);

const char *vmm_drive_aio_name(VmmDriveAio aio);
const char *vmm_error_policy_name(VmmErrorPolicy policy);
/* The chardev with id @id, or NULL. */
VmmChardevSpec *vmm_options_find_chardev(VmmOptions *opts, const char *id);
const char *vmm_drive_cache_name(VmmDriveCache cache);

/* Whether @path (described by @st) is a file keel-vmm may read as @what
 * ("-kernel", "-drive file=", or NULL): a regular file, or a block device
 * if @block_ok.  A FIFO, socket, character device or directory is refused
 * with a one-line message (opening them could block forever or read a
 * stream).  Returns 0 or -1 with the message in @err. */
struct stat;
int vmm_check_file_type(const char *what, const char *path, const struct stat *st,
                        bool block_ok, char *err, size_t errlen);
/* The same after a stat() of @path (which never blocks); a missing file is
 * an error too. */
int vmm_check_user_file(const char *what, const char *path, bool block_ok,
                        char *err, size_t errlen);

/* The usage text for --help. */
void vmm_options_print_help(FILE *out);

/* Formats an error message into @err (for the caller to print) and returns
 * -1, so parsers and loaders can write `return vmm_fail(err, len, ...)`. */
int vmm_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
