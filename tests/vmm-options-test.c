/*
 * keel-vmm's command-line parser: good command lines fill VmmOptions as
 * expected; each bad one fails with one line that names the option.
 */
#include "config.h"

#include "tests/keel-test.h"
#include "vmm/options.h"

#include <glib.h>
#include <string.h>
#include <unistd.h>

static char kernel_path[] = "/tmp/keel-vmm-opt-XXXXXX";
static char err[4096];

/* Parses a NULL-terminated list of arguments (argv[0] added). */
static int parse(VmmOptions *o, const char *const *args)
{
    const char *argv[64] = { "keel-vmm" };
    int argc = 1;

    for (; args[argc - 1]; argc++) {
        argv[argc] = args[argc - 1];
    }
    return vmm_options_parse(o, argc, (char **)argv, err, sizeof(err));
}

#define ARGS(...) ((const char *const[]) { __VA_ARGS__, NULL })

/* Expect failure, with the message mentioning @needle and being one line. */
static void bad(const char *const *args, const char *needle, const char *what)
{
    VmmOptions o;
    int r = parse(&o, args);

    KEEL_OK(r < 0 && strstr(err, needle) && !strchr(err, '\n'),
            "%s → error naming '%s' (got '%s')", what, needle, r < 0 ? err : "success");
    if (r == 0) {
        vmm_options_free(&o);
    }
}

/* -smp with QEMU's derivation rules: @arg → cpus/maxcpus/sockets/cores/threads. */
static void smp_ok(const char *arg, unsigned cpus, unsigned maxcpus, unsigned sockets,
                   unsigned cores, unsigned threads)
{
    VmmOptions o;
    int r = parse(&o, ARGS("-kernel", kernel_path, "-smp", arg));

    KEEL_OK(r == 0 && o.smp.cpus == cpus && o.smp.max_cpus == maxcpus &&
            o.smp.sockets == sockets && o.smp.cores == cores && o.smp.threads == threads,
            "-smp %s → cpus=%u maxcpus=%u sockets=%u cores=%u threads=%u (got %s %u %u %u %u %u)",
            arg, cpus, maxcpus, sockets, cores, threads, r ? err : "", o.smp.cpus,
            o.smp.max_cpus, o.smp.sockets, o.smp.cores, o.smp.threads);
    if (r == 0) {
        vmm_options_free(&o);
    }
}

static void test_smp(void)
{
    /* The cases of QEMU's tests/unit/test-smp-parse.c that x86 shares
     * (cores preferred over sockets, since QEMU 6.2). */
    smp_ok("1", 1, 1, 1, 1, 1);
    smp_ok("2", 2, 2, 1, 2, 1);
    smp_ok("cpus=4", 4, 4, 1, 4, 1);
    smp_ok("64", 64, 64, 1, 64, 1);
    smp_ok("128", 128, 128, 1, 128, 1);
    smp_ok("sockets=2", 2, 2, 2, 1, 1);
    smp_ok("cores=4", 4, 4, 1, 4, 1);
    smp_ok("threads=2", 2, 2, 1, 1, 2);
    smp_ok("sockets=2,cores=3,threads=2", 12, 12, 2, 3, 2);
    smp_ok("8,sockets=2", 8, 8, 2, 4, 1);
    smp_ok("8,cores=2", 8, 8, 4, 2, 1);
    smp_ok("8,threads=2", 8, 8, 1, 4, 2);
    smp_ok("8,sockets=2,cores=2", 8, 8, 2, 2, 2);
    smp_ok("4,maxcpus=8", 4, 8, 1, 8, 1);
    smp_ok("maxcpus=8", 8, 8, 1, 8, 1);
    smp_ok("2,maxcpus=4,sockets=2,cores=2,threads=1", 2, 4, 2, 2, 1);
    smp_ok("4,sockets=2,cores=2,threads=1,dies=1", 4, 4, 2, 2, 1);

    bad(ARGS("-kernel", kernel_path, "-smp", "4,sockets=3"), "product of the hierarchy",
        "-smp 4,sockets=3: product does not match");
    bad(ARGS("-kernel", kernel_path, "-smp", "2,sockets=4"), "sockets (4) * cores (0)",
        "-smp 2,sockets=4 derives 0 cores");
    bad(ARGS("-kernel", kernel_path, "-smp", "8,maxcpus=4"), "maxcpus must be equal to or greater",
        "-smp maxcpus < cpus");
    bad(ARGS("-kernel", kernel_path, "-smp", "0"), "greater than zero", "-smp 0");
    bad(ARGS("-kernel", kernel_path, "-smp", "2,cores=0"), "greater than zero", "-smp cores=0");
    bad(ARGS("-kernel", kernel_path, "-smp", "129"), "max CPUs supported by keel-vmm is 128",
        "-smp 129");
    bad(ARGS("-kernel", kernel_path, "-smp", "two"), "cpus=two", "-smp two");
    bad(ARGS("-kernel", kernel_path, "-smp", "2,-1"), "-smp 2,-1", "-smp with a junk element");
    bad(ARGS("-kernel", kernel_path, "-smp", "2,sockets=x"), "sockets=x", "-smp sockets=x");
    bad(ARGS("-kernel", kernel_path, "-smp", "2,colour=2"), "'colour'", "-smp unknown key");
    bad(ARGS("-kernel", kernel_path, "-smp", "4,dies=2"), "dies=2", "-smp dies=2");
    /* 125 CPUs, but 5 threads and 5 cores take 3 APIC ID bits each: socket 4
     * starts at APIC ID 256. */
    bad(ARGS("-kernel", kernel_path, "-smp", "sockets=5,cores=5,threads=5"), "APIC ID",
        "-smp topology beyond 8-bit APIC IDs");
}

static void test_cpu_accel(void)
{
    VmmOptions o;

    KEEL_IS(parse(&o, ARGS("-kernel", kernel_path, "-accel", "kvm", "-cpu", "host",
                           "-smp", "2")), 0, "-accel kvm -cpu host -smp 2 (%s)", err);
    KEEL_OK(o.cpu_model && !strcmp(o.cpu_model, "host") && o.smp.cpus == 2, "-cpu host kept");
    vmm_options_free(&o);
    KEEL_IS(parse(&o, ARGS("-kernel", kernel_path, "-cpu", "max", "-accel",
                           "kvm,kernel-irqchip=on", "-machine", "pc,accel=kvm:tcg")), 0,
            "-cpu max, -accel kvm,kernel-irqchip=on, -machine accel=kvm:tcg (%s)", err);
    vmm_options_free(&o);
    KEEL_IS(parse(&o, ARGS("-kernel", kernel_path, "-accel", "accel=kvm")), 0,
            "-accel accel=kvm (%s)", err);
    vmm_options_free(&o);
    bad(ARGS("-kernel", kernel_path, "-accel", "tcg"), "no TCG", "-accel tcg refused");
    bad(ARGS("-kernel", kernel_path, "-machine", "accel=tcg"), "-machine accel=tcg: keel-vmm has no TCG",
        "-machine accel=tcg refused");
    bad(ARGS("-kernel", kernel_path, "-machine", "q35,accel=tcg:kvm"), "no TCG",
        "-machine accel=tcg:kvm refused (QEMU would pick tcg)");
    bad(ARGS("-kernel", kernel_path, "-accel", "hvf"), "unknown accelerator 'hvf'", "-accel hvf");
    bad(ARGS("-kernel", kernel_path, "-accel", "kvm,kernel-irqchip=split"), "kernel-irqchip=split",
        "-accel kernel-irqchip=split");
    bad(ARGS("-kernel", kernel_path, "-accel", "kvm,dirty-ring-size=4096"), "'dirty-ring-size'",
        "-accel unknown property");
    bad(ARGS("-kernel", kernel_path, "-cpu", "qemu64"), "unsupported CPU model 'qemu64'",
        "-cpu qemu64");
    bad(ARGS("-kernel", kernel_path, "-cpu", "host,+avx512f"), "'+avx512f'",
        "-cpu host,+feature");
    {
        int r = parse(&o, ARGS("-kernel", kernel_path, "-accel", "tcg", "-cpu", "EPYC", "-smp", "3,sockets=2"));
        char **lines = r < 0 ? g_strsplit(err, "\n", -1) : NULL;

        KEEL_OK(r < 0 && g_strv_length(lines) == 3 && strstr(lines[0], "-accel tcg") &&
                strstr(lines[1], "EPYC") && strstr(lines[2], "-smp 3,sockets=2"),
                "-accel, -cpu and -smp problems all named in one run (got '%s')",
                r < 0 ? err : "success");
        g_strfreev(lines);
    }
}

/* -blockdev (key=value and JSON), -device virtio-blk-pci's QEMU keys, and
 * the -drive keys QEMU and libvirt lines use (issue 12). */
static void test_blockdev(void)
{
    VmmOptions o;
    VmmDrive *d;

    /* libvirt's line, unchanged. */
    KEEL_IS(parse(&o, ARGS("-kernel", kernel_path,
                           "-blockdev", "{\"driver\":\"file\",\"filename\":\"/x.img\","
                           "\"node-name\":\"f0\"}",
                           "-blockdev", "{\"driver\":\"raw\",\"file\":\"f0\",\"node-name\":\"d0\"}",
                           "-device", "virtio-blk-pci,drive=d0,bus=pci.0,addr=0x4,bootindex=1")),
            0, "libvirt's JSON -blockdev file + raw + -device ...,addr=0x4,bootindex=1 parses (%s)",
            err);
    d = &o.drives[0];
    KEEL_IS(o.nr_drives, 1, "one disk from the two nodes");
    KEEL_OK(!strcmp(d->file, "/x.img") && !strcmp(d->id, "d0") && d->node_name &&
            !strcmp(d->node_name, "f0"), "raw node d0 over file node f0 (/x.img)");
    KEEL_IS(d->pci_slot, 4, "addr=0x4 → PCI slot 4");
    KEEL_OK(d->attached && !d->probe_format, "attached, explicit raw (no probing)");
    vmm_options_free(&o);

    KEEL_IS(parse(&o, ARGS("-kernel", kernel_path,
                           "-blockdev", "driver=file,filename=/y.img,node-name=f1,aio=native,"
                           "cache.direct=on,discard=unmap,detect-zeroes=unmap,locking=off",
                           "-blockdev", "driver=raw,file=f1,node-name=d1,offset=4096,size=1M,"
                           "read-only=on", "-device", "virtio-blk-pci,drive=d1,id=v1,serial=S1,"
                           "num-queues=1,scsi=off,logical_block_size=4096,"
                           "physical_block_size=4096")), -1, "size=1M is not bytes");
    KEEL_OK(strstr(err, "size=1M") != NULL, "named: %s", err);
    KEEL_IS(parse(&o, ARGS("-kernel", kernel_path,
                           "-blockdev", "driver=file,filename=/y.img,node-name=f1,aio=native,"
                           "cache.direct=on,discard=unmap,detect-zeroes=unmap,locking=off",
                           "-blockdev", "driver=raw,file=f1,node-name=d1,offset=4096,"
                           "size=1048576,read-only=on", "-device", "virtio-blk-pci,drive=d1,"
                           "id=v1,serial=S1,num-queues=1,scsi=off,logical_block_size=4096,"
                           "physical_block_size=8192")), 0, "key=value -blockdev with every key "
            "(%s)", err);
    d = &o.drives[0];
    KEEL_OK(d->aio == VMM_AIO_NATIVE && d->cache == VMM_CACHE_NONE && d->discard_unmap &&
            d->detect_zeroes == KEEL_BLK_DETECT_ZEROES_UNMAP &&
            d->locking == KEEL_BLK_LOCKING_OFF, "file node keys applied");
    KEEL_OK(d->offset == 4096 && d->size == 1048576 && d->readonly, "raw node keys applied");
    KEEL_OK(d->logical_block_size == 4096 && d->physical_block_size == 8192 &&
            d->serial && !strcmp(d->serial, "S1"), "device block sizes and serial");
    vmm_options_free(&o);

    KEEL_IS(parse(&o, ARGS("-kernel", kernel_path, "-blockdev",
                           "{\"driver\":\"raw\",\"node-name\":\"d2\",\"file\":{\"driver\":"
                           "\"host_device\",\"filename\":\"/dev/loop0\"},\"cache\":"
                           "{\"direct\":true,\"no-flush\":false}}",
                           "-device", "virtio-blk-pci,drive=d2")), 0,
            "JSON raw node with an inline host_device file and nested cache (%s)", err);
    KEEL_OK(o.drives[0].host_device && o.drives[0].cache == VMM_CACHE_NONE,
            "host_device, cache.direct=true");
    vmm_options_free(&o);

    KEEL_IS(parse(&o, ARGS("-kernel", kernel_path, "-drive",
                           "file=/z.img,if=virtio,discard=unmap,cache=writethrough,media=disk,"
                           "index=0,detect-zeroes=on,file.locking=auto")), 0,
            "-drive discard, cache=writethrough, media, index, detect-zeroes (%s)", err);
    d = &o.drives[0];
    KEEL_OK(d->cache == VMM_CACHE_WRITETHROUGH && d->discard_unmap && d->probe_format &&
            d->detect_zeroes == KEEL_BLK_DETECT_ZEROES_ON, "applied; no format= → probe");
    vmm_options_free(&o);

    /* Every problem of a bad line, one line each. */
    KEEL_IS(parse(&o, ARGS("-kernel", kernel_path,
                           "-blockdev", "driver=qcow2,node-name=q0,file=f9",
                           "-blockdev", "driver=file,node-name=f3",
                           "-blockdev", "{\"driver\":",
                           "-device", "virtio-blk-pci,drive=zz,scsi=on,num-queues=17,addr=0x40,"
                           "bus=pci.1,logical_block_size=1000",
                           "-drive", "file=/a.img,media=cdrom,index=x")), -1, "bad line refused");
    {
        static const char *const needles[] = {
            "driver=qcow2", "filename= is required", "not valid JSON", "drive=zz",
            "scsi=on", "num-queues=17", "addr=0x40", "bus=pci.1", "logical_block_size=1000",
            "media=cdrom", "index=x",
        };
        for (size_t i = 0; i < G_N_ELEMENTS(needles); i++) {
            KEEL_OK(strstr(err, needles[i]) != NULL, "names '%s'", needles[i]);
        }
    }
    KEEL_IS(parse(&o, ARGS("-kernel", kernel_path,
                           "-blockdev", "driver=file,filename=/a.img,node-name=f0",
                           "-blockdev", "driver=raw,file=f0,node-name=d0",
                           "-device", "virtio-blk-pci,drive=f0")), -1,
            "attaching the file node under a raw node is refused");
    KEEL_OK(strstr(err, "used by raw node d0") != NULL, "saying so: %s", err);
    KEEL_IS(parse(&o, ARGS("-kernel", kernel_path,
                           "-drive", "file=/a.img,if=none,id=a",
                           "-drive", "file=/b.img,if=none,id=b",
                           "-device", "virtio-blk-pci,drive=a,addr=5",
                           "-device", "virtio-blk-pci,drive=b,addr=05.0")), -1,
            "two devices in one slot refused");
    KEEL_OK(strstr(err, "slot already used") != NULL, "saying so: %s", err);
}

#define IO2 "-object", "iothread,id=io0", "-object", "iothread,id=io1"
#define DRIVE0 "-drive", "file=/d0.img,if=none,id=d0"

/* A good multiqueue line: @num_queues and queue → mapping entry @map
 * (iothread names @ids, one per queue). */
static void mq_ok(const char *const *args, int num_queues, const char *const *ids,
                  const char *what)
{
    VmmOptions o;
    VmmDrive *d = &o.drives[0];
    bool same = true;

    if (parse(&o, args) < 0) {
        KEEL_OK(false, "%s parses (%s)", what, err);
        return;
    }
    for (int q = 0; q < num_queues && same; q++) {
        const char *got = d->nr_vq_map ? (d->queue_map[q] >= 0 ?
                          d->vq_map[d->queue_map[q]].iothread : "?") : d->iothread;
        same = ids[q] ? got && !strcmp(got, ids[q]) : got == NULL;
    }
    KEEL_OK(d->num_queues == num_queues && same, "%s → %d queues on the expected iothreads "
            "(got %d)", what, num_queues, d->num_queues);
    vmm_options_free(&o);
}

static void test_multiqueue(void)
{
    VmmOptions o;

    mq_ok(ARGS("-kernel", kernel_path, IO2, DRIVE0, "-device",
               "{\"driver\":\"virtio-blk-pci\",\"drive\":\"d0\",\"num-queues\":4,"
               "\"iothread-vq-mapping\":[{\"iothread\":\"io0\"},{\"iothread\":\"io1\"}]}"),
          4, ARGS("io0", "io1", "io0", "io1"), "QEMU 9's JSON iothread-vq-mapping, round-robin");
    mq_ok(ARGS("-kernel", kernel_path, IO2, DRIVE0, "-device",
               "{\"driver\":\"virtio-blk-pci\",\"drive\":\"d0\",\"num-queues\":4,"
               "\"iothread-vq-mapping\":[{\"iothread\":\"io0\",\"vqs\":[3]},"
               "{\"iothread\":\"io1\",\"vqs\":[0,1,2]}]}"),
          4, ARGS("io1", "io1", "io1", "io0"), "explicit vqs lists");
    mq_ok(ARGS("-kernel", kernel_path, IO2, DRIVE0, "-device",
               "virtio-blk-pci,drive=d0,num-queues=3,iothread-vq-mapping.0.iothread=io1,"
               "iothread-vq-mapping.1.iothread=io0"),
          3, ARGS("io1", "io0", "io1"), "the keyval spelling of the mapping");
    mq_ok(ARGS("-kernel", kernel_path, IO2, DRIVE0, "-device",
               "virtio-blk-pci,drive=d0,num-queues=2,iothread=io1"),
          2, ARGS("io1", "io1"), "keyval num-queues=2,iothread=io1");
    mq_ok(ARGS("-kernel", kernel_path, "-smp", "4", DRIVE0, "-device", "virtio-blk-pci,drive=d0"),
          4, ARGS(NULL, NULL, NULL, NULL), "num-queues unset with -smp 4: 4 (QEMU's default)");
    mq_ok(ARGS("-kernel", kernel_path, "-smp", "40", "-drive", "file=/v.img,if=virtio"), 16,
          ARGS(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
               NULL, NULL, NULL), "-smp 40, if=virtio: 16 queues (keel-vmm's maximum)");
    mq_ok(ARGS("-kernel", kernel_path, DRIVE0, "-device", "virtio-blk-pci,drive=d0"), 1,
          ARGS(NULL), "one vCPU: one queue");

    bad(ARGS("-kernel", kernel_path, DRIVE0, "-device", "virtio-blk-pci,drive=d0,num-queues=0"),
        "num-queues=0: expected 1 to 16", "num-queues=0");
    bad(ARGS("-kernel", kernel_path, DRIVE0, "-device", "virtio-blk-pci,drive=d0,num-queues=x"),
        "num-queues=x", "num-queues=x");
    bad(ARGS("-kernel", kernel_path, "-device", "{\"driver\":\"virtio-blk-pci\","),
        "-device {", "-device with bad JSON");
    bad(ARGS("-kernel", kernel_path, IO2, DRIVE0, "-device",
             "{\"driver\":\"virtio-blk-pci\",\"drive\":\"d0\",\"num-queues\":2,"
             "\"iothread-vq-mapping\":[{\"iothread\":\"io0\",\"vqs\":[0]},"
             "{\"iothread\":\"io1\"}]}"), "either all or none", "vqs on some entries only");
    bad(ARGS("-kernel", kernel_path, IO2, DRIVE0, "-device",
             "{\"driver\":\"virtio-blk-pci\",\"drive\":\"d0\",\"num-queues\":2,"
             "\"iothread-vq-mapping\":[{\"vqs\":[0,1]}]}"), "\"iothread\" is required",
        "an entry without iothread");
    bad(ARGS("-kernel", kernel_path, IO2, DRIVE0, "-device",
             "{\"driver\":\"virtio-blk-pci\",\"drive\":\"d0\",\"num-queues\":2,"
             "\"iothread-vq-mapping\":[{\"iothread\":\"io0\",\"queues\":2}]}"),
        "unknown member 'queues'", "an unknown member");

    /* Everything wrong with the mappings of one line, in one run. */
    KEEL_IS(parse(&o, ARGS("-kernel", kernel_path, IO2,
                           "-drive", "file=/a.img,if=none,id=a",
                           "-drive", "file=/b.img,if=none,id=b",
                           "-drive", "file=/c.img,if=none,id=c",
                           "-drive", "file=/e.img,if=none,id=e",
                           "-device", "{\"driver\":\"virtio-blk-pci\",\"drive\":\"a\","
                           "\"iothread\":\"io0\",\"iothread-vq-mapping\":[{\"iothread\":"
                           "\"io1\"}]}",
                           "-device", "{\"driver\":\"virtio-blk-pci\",\"drive\":\"b\","
                           "\"num-queues\":4,\"iothread-vq-mapping\":[{\"iothread\":\"io0\","
                           "\"vqs\":[0,4]},{\"iothread\":\"io1\",\"vqs\":[0,1]}]}",
                           "-device", "{\"driver\":\"virtio-blk-pci\",\"drive\":\"c\","
                           "\"iothread-vq-mapping\":[{\"iothread\":\"io7\"},"
                           "{\"iothread\":\"io1\"},{\"iothread\":\"io1\"}]}",
                           "-device", "virtio-blk-pci,drive=e,num-queues=17")), -1,
            "bad mappings refused");
    {
        static const char *const needles[] = {
            "iothread and iothread-vq-mapping properties cannot be set at the same time",
            "vq index 4 for iothread io0 must be less than num_queues 4",
            "cannot assign vq 0 to iothread io1 because it is already assigned",
            "missing iothread for vq 2", "missing iothread for vq 3",
            "duplicate iothread name io1", "num-queues=17",
        };
        for (size_t i = 0; i < G_N_ELEMENTS(needles); i++) {
            KEEL_OK(strstr(err, needles[i]) != NULL, "names '%s'", needles[i]);
        }
    }
    KEEL_IS(parse(&o, ARGS("-kernel", kernel_path, IO2, DRIVE0, "-device",
                           "{\"driver\":\"virtio-blk-pci\",\"drive\":\"d0\",\"num-queues\":2,"
                           "\"iothread-vq-mapping\":[{\"iothread\":\"io0\"},"
                           "{\"iothread\":\"io9\"}]}")), -1, "an iothread that does not exist");
    KEEL_OK(strstr(err, "iothread io9: no -object iothread,id=io9") != NULL, "saying so: %s", err);
}

int main(void)
{
    VmmOptions o;
    int fd = mkstemp(kernel_path);

    if (fd < 0) {
        keel_test_skip_all("mkstemp failed");
    }
    close(fd);

    /* Defaults. */
    KEEL_IS(parse(&o, ARGS("-kernel", kernel_path)), 0, "minimal command line parses");
    KEEL_IS(o.ram_size, 128ull << 20, "default RAM is 128 MiB");
    KEEL_OK(o.smp.cpus == 1 && o.smp.max_cpus == 1 && o.smp.sockets == 1 && o.smp.cores == 1 &&
            o.smp.threads == 1, "one vCPU");
    KEEL_OK(o.cpu_model == NULL, "no -cpu");
    KEEL_OK(o.serial_stdio, "serial on stdio by default");
    KEEL_IS(o.nr_drives, 0, "no drives");
    vmm_options_free(&o);

    /* Everything at once, QEMU spellings included. */
    KEEL_IS(parse(&o, ARGS("--m", "2G", "-smp", "1", "-kernel", kernel_path,
                           "-initrd", kernel_path, "-append", "console=ttyS0 quiet",
                           "-object", "iothread,id=io0",
                           "-drive", "file=/tmp/a,,b.img,format=raw,if=virtio,aio=native,"
                           "cache=none,readonly=on,iothread=io0,serial=SN123",
                           "-drive", "file=/tmp/c.img,if=none,id=d1,aio=io_uring,cache=unsafe",
                           "-device", "virtio-blk-pci,drive=d1",
                           "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                           "-serial", "stdio", "-nographic", "-enable-kvm", "-nodefaults",
                           "-no-reboot", "-display", "none", "-machine", "accel=kvm")),
            0, "a full QEMU-style command line parses (%s)", err);
    KEEL_IS(o.ram_size, 2ull << 30, "-m 2G");
    KEEL_OK(o.append && !strcmp(o.append, "console=ttyS0 quiet"), "-append kept");
    KEEL_IS(o.nr_iothreads, 1, "one iothread object");
    KEEL_OK(o.iothreads[0].poll_max_ns == -1 && o.iothreads[0].poll_grow == -1 &&
            o.iothreads[0].poll_shrink == -1, "iothread without poll knobs keeps the defaults");
    KEEL_IS(o.nr_drives, 2, "two drives");
    KEEL_OK(!strcmp(o.drives[0].file, "/tmp/a,b.img"), "',,' is a literal comma in file=");
    KEEL_IS(o.drives[0].aio, VMM_AIO_NATIVE, "aio=native");
    KEEL_IS(o.drives[0].cache, VMM_CACHE_NONE, "cache=none");
    KEEL_OK(o.drives[0].readonly, "readonly=on");
    KEEL_OK(o.drives[0].iothread && !strcmp(o.drives[0].iothread, "io0"), "iothread=io0");
    KEEL_OK(o.drives[0].serial && !strcmp(o.drives[0].serial, "SN123"), "serial=SN123");
    KEEL_OK(o.drives[1].if_none && o.drives[1].attached, "if=none drive attached by -device");
    KEEL_IS(o.drives[1].aio, VMM_AIO_IO_URING, "aio=io_uring");
    KEEL_IS(o.drives[1].cache, VMM_CACHE_UNSAFE, "cache=unsafe");
    vmm_options_free(&o);

    {
        uint64_t b;
        KEEL_OK(vmm_parse_size_mib("512", &b) == 0 && b == 512ull << 20, "bare number = MiB");
        KEEL_OK(vmm_parse_size_mib("1048576K", &b) == 0 && b == 1ull << 30, "K suffix");
        KEEL_OK(vmm_parse_size_mib("3GiB", &b) == 0 && b == 3ull << 30, "GiB suffix");
        KEEL_OK(vmm_parse_size_mib("12Q", &b) < 0 && vmm_parse_size_mib("-5", &b) < 0 &&
                vmm_parse_size_mib("", &b) < 0, "junk sizes refused");
    }

    KEEL_IS(parse(&o, ARGS("--help")), 0, "--help needs no -kernel");
    KEEL_OK(o.want_help, "want_help set");
    vmm_options_free(&o);
    KEEL_IS(parse(&o, ARGS("-features")), 0, "--features needs no -kernel (single dash too)");
    vmm_options_free(&o);

    /* Bad command lines, each naming the option. */
    KEEL_IS(parse(&o, ARGS("-kernel", kernel_path, "-object",
                           "iothread,id=io1,poll-max-ns=0,poll-grow=4,poll-shrink=2")),
            0, "iothread poll knobs parse (%s)", err);
    KEEL_OK(o.nr_iothreads == 1 && o.iothreads[0].poll_max_ns == 0 &&
            o.iothreads[0].poll_grow == 4 && o.iothreads[0].poll_shrink == 2,
            "poll-max-ns=0 poll-grow=4 poll-shrink=2 kept");
    vmm_options_free(&o);
    /* Guest RAM backends, QEMU's spelling. */
    KEEL_IS(o.ram_backing, VM_RAM_AUTO, "no memory backend: auto");
    KEEL_IS(parse(&o, ARGS("-kernel", kernel_path, "-object", "memory-backend-memfd,id=m0",
                           "-machine", "memory-backend=m0,accel=kvm")),
            0, "memory-backend-memfd parses (%s)", err);
    KEEL_IS(o.ram_backing, VM_RAM_MEMFD, "-machine memory-backend= picks the memfd");
    KEEL_IS(o.ram_size, VMM_DEFAULT_RAM_SIZE, "RAM size still from -m (default)");
    vmm_options_free(&o);
    KEEL_IS(parse(&o, ARGS("-kernel", kernel_path, "-object",
                           "memory-backend-ram,id=ram0,size=268435456,share=off",
                           "-machine", "memory-backend=ram0")),
            0, "memory-backend-ram with size= in bytes parses (%s)", err);
    KEEL_OK(o.ram_backing == VM_RAM_ANONYMOUS && o.ram_size == 256ull << 20,
            "anonymous RAM, and without -m the backend's size= (256 MiB) is the RAM size");
    vmm_options_free(&o);
    KEEL_IS(parse(&o, ARGS("-m", "512M", "-kernel", kernel_path, "-object",
                           "memory-backend-ram,id=r,size=512M", "-M", "memory-backend=r")),
            0, "size= equal to -m is fine (%s)", err);
    vmm_options_free(&o);
    bad(ARGS("-m", "256", "-kernel", kernel_path, "-object", "memory-backend-ram,id=r,size=512M",
             "-machine", "memory-backend=r"), "does not match -m", "backend size != -m");
    bad(ARGS("-kernel", kernel_path, "-object", "memory-backend-memfd,id=m0"),
        "-machine memory-backend=m0", "memory backend not used by -machine");
    bad(ARGS("-kernel", kernel_path, "-machine", "memory-backend=m9"), "memory-backend=m9",
        "-machine memory-backend naming no object");
    bad(ARGS("-kernel", kernel_path, "-object", "memory-backend-memfd,id=m0,hugetlb=on",
             "-machine", "memory-backend=m0"), "hugetlb=on", "hugetlb=on refused");
    bad(ARGS("-kernel", kernel_path, "-object", "memory-backend-ram,id=m0,share=on",
             "-machine", "memory-backend=m0"), "share=on", "shared anonymous RAM refused");
    bad(ARGS("-kernel", kernel_path, "-object", "memory-backend-ram,id=m0,prealloc=on",
             "-machine", "memory-backend=m0"), "prealloc", "unknown backend parameter");
    bad(ARGS("-kernel", kernel_path, "-object", "memory-backend-ram,id=a",
             "-object", "memory-backend-memfd,id=b", "-machine", "memory-backend=a"),
        "only one memory backend", "two memory backends");
    bad(ARGS("-kernel", kernel_path, "-object", "memory-backend-file,id=f,mem-path=/dev/shm"),
        "memory-backend-file", "unknown object type");
    bad(ARGS("-kernel", kernel_path, "-object", "iothread,id=io1,poll-max-ns=-5"),
        "poll-max-ns=-5", "negative poll-max-ns");
    bad(ARGS("-kernel", kernel_path, "-object", "iothread,id=io1,poll-grow=2x"),
        "poll-grow=2x", "junk poll-grow");
    bad(ARGS("-kernel", kernel_path, "-bogus"), "-bogus", "unknown option");
    bad(ARGS("-kernel", kernel_path, "stray"), "stray", "stray argument");
    bad(ARGS("-kernel"), "-kernel", "missing argument");
    bad(ARGS("-m", "1G"), "-kernel", "no -kernel");
    bad(ARGS("-kernel", "/nonexistent/kernel"), "-kernel /nonexistent/kernel", "missing file");
    bad(ARGS("-kernel", kernel_path, "-m", "lots"), "-m lots", "-m junk");
    bad(ARGS("-kernel", kernel_path, "-m", "1"), "-m 1", "-m too small");
    bad(ARGS("-kernel", kernel_path, "-m", "4096G"), "-m 4096G", "-m too large");
    test_smp();
    test_cpu_accel();
    bad(ARGS("-kernel", kernel_path, "-drive", "format=raw"), "file= is required", "-drive no file");
    bad(ARGS("-kernel", kernel_path, "-drive", "file=x,format=qcow2"), "format=qcow2",
        "-drive format=qcow2");
    bad(ARGS("-kernel", kernel_path, "-drive", "file=x,aio=posix"), "aio=posix", "-drive aio=posix");
    bad(ARGS("-kernel", kernel_path, "-drive", "file=x,cache=sometimes"), "cache=sometimes",
        "-drive cache=sometimes");
    bad(ARGS("-kernel", kernel_path, "-drive", "file=x,aio=native"), "aio=native needs",
        "aio=native without O_DIRECT");
    bad(ARGS("-kernel", kernel_path, "-drive", "file=x,readonly=maybe"), "readonly=maybe",
        "-drive readonly=maybe");
    bad(ARGS("-kernel", kernel_path, "-drive", "file=x,if=ide"), "if=ide", "-drive if=ide");
    bad(ARGS("-kernel", kernel_path, "-drive", "file=x,colour=blue"), "'colour'",
        "-drive unknown key");
    bad(ARGS("-kernel", kernel_path, "-drive", "file=x,serial=123456789012345678901"),
        "serial=", "-drive serial too long");
    bad(ARGS("-kernel", kernel_path, "-drive", "file=x,iothread=io9"), "iothread=io9",
        "-drive iothread naming no object");
    bad(ARGS("-kernel", kernel_path, "-drive", "file=x,if=none,id=d0"), "d0",
        "if=none drive never attached");
    bad(ARGS("-kernel", kernel_path, "-device", "virtio-blk-pci,drive=nope"), "drive=nope",
        "-device naming no drive");
    bad(ARGS("-kernel", kernel_path, "-device", "e1000"), "-device e1000", "-device e1000");
    bad(ARGS("-kernel", kernel_path, "-device", "isa-debug-exit,iobase=0x501"), "iobase=0x501",
        "-device isa-debug-exit elsewhere");
    bad(ARGS("-kernel", kernel_path, "-object", "memory-backend-ram,id=m"), "-object",
        "-object other than iothread");
    bad(ARGS("-kernel", kernel_path, "-object", "iothread"), "-object iothread",
        "-object iothread without id");
    bad(ARGS("-kernel", kernel_path, "-object", "iothread,id=a", "-object", "iothread,id=a"),
        "duplicate", "duplicate iothread id");
    bad(ARGS("-kernel", kernel_path, "-serial", "pty"), "-serial pty", "-serial pty");
    bad(ARGS("-kernel", kernel_path, "-display", "gtk"), "-display gtk", "-display gtk");

    /* Every problem in one run, one line each, in command-line order; a
     * refused option yields no derived problem (the drive refused for its
     * key is not also "not used"; the refused backend not "missing"). */
    {
        int r = parse(&o, ARGS("-bogus", "-kernel", kernel_path, "-drive",
                               "file=x,if=none,id=d0,colour=red,aio=posix", "-smp", "3,cores=2",
                               "-object", "memory-backend-ram,id=m0,prealloc=on",
                               "-machine", "memory-backend=m0", "stray"));
        char **lines = r < 0 ? g_strsplit(err, "\n", -1) : NULL;

        KEEL_OK(r < 0 && g_strv_length(lines) == 6 && strstr(lines[0], "-bogus") &&
                strstr(lines[1], "'colour'") && strstr(lines[2], "aio=posix") &&
                strstr(lines[3], "-smp 3,cores=2") && strstr(lines[4], "'prealloc'") &&
                strstr(lines[5], "stray"),
                "six problems named in one run, in order (got '%s')", r < 0 ? err : "success");
        g_strfreev(lines);
    }
    /* More problems than the caller's buffer holds: whole lines only, and a
     * count of the rest. */
    {
        char small[128];
        const char *argv[] = { "keel-vmm", "-kernel", kernel_path, "-a1", "-a2", "-a3", "-a4",
                               "-a5", "-a6", "-a7", "-a8", "-a9", NULL };
        int r = vmm_options_parse(&o, 12, (char **)argv, small, sizeof(small));

        KEEL_OK(r < 0 && strstr(small, "-a1: unknown option") && strstr(small, "more problems not shown") &&
                strlen(small) < sizeof(small), "a full buffer ends with how many were not shown (got '%s')",
                small);
    }

    test_blockdev();
    test_multiqueue();
    unlink(kernel_path);
    return keel_test_done();
}
