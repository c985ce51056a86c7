// Loaded modules in gdb: cli/gdb/kdump.py's kdump-load-modules adds each module's debug file
// (Debian's -dbg package, extracted by the fixture script) with every section where the dumped
// kernel placed it, read from mod->sect_attrs. Checked with real gdb on real dumps against what
// the server reads by other ways: the module's own kallsyms (`monitor sym`) and its struct
// module (`monitor lsmod`), and against values the module's code stores in its .bss.
import assert from "node:assert/strict";
import { existsSync, realpathSync } from "node:fs";
import { dirname, join } from "node:path";
import { boot, hasBoot } from "./fixtures.ts";
import { runGdb, runServer, startServer } from "./gdb_helpers.ts";

const KDUMP_PY = new URL("../cli/gdb/kdump.py", import.meta.url).pathname;

const cases = [
  { boot: "x86_64-6.1", dump: "dump.zlib-d31.kdump", gdb: "gdb" },
  { boot: "x86_64-6.12", dump: "dump.zlib-d31.kdump", gdb: "gdb" },
  { boot: "aarch64-6.1", dump: "dump.zlib-d31.kdump", gdb: "gdb-multiarch" },
  { boot: "aarch64-6.12", dump: "dump.qemu-kdump-zlib-reassembled.kdump", gdb: "gdb-multiarch" },
];

/** The fixture's debug modules: kernels/KREL/modules-debug, beside the boot's vmlinux. */
function debugModules(vmlinux: string): string {
  return join(dirname(realpathSync(vmlinux)), "modules-debug");
}

/**
 * The module symbol's address from `monitor sym` (the module's kallsyms), or undefined where
 * kallsyms has no data symbols (Debian's arm64 kernels: no CONFIG_KALLSYMS_ALL).
 */
function symValue(out: string, name: string): bigint | undefined {
  const m = out.match(new RegExp(`^${name} = (0x[0-9a-f]+) \\[qemu_fw_cfg\\]$`, "m"));
  if (!m) assert.match(out, new RegExp(`^sym: no symbol "${name}"$`, "m"));
  return m ? BigInt(m[1]) : undefined;
}

/** The value gdb prints for `p/x …` under a `echo TAG\n` marker. */
function tagged(out: string, tag: string): string {
  const m = out.match(new RegExp(`^${tag}\\n\\$\\d+ = (.*)$`, "m"));
  assert.ok(m, `no ${tag} in:\n${out}`);
  return m[1];
}

for (const c of cases) {
  Deno.test({
    name: `kdump-load-modules: ${c.boot} module symbols where the kernel put them (real gdb)`,
    ignore: !hasBoot(c.boot),
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const b = boot(c.boot);
      const modules = debugModules(b.vmlinux);
      assert.ok(
        existsSync(join(modules, ".done")),
        `${modules} is missing: run bash testdata/build-fixtures.sh ${c.boot}`,
      );
      const server = await startServer(["--vmlinux", b.vmlinux, b.path(c.dump)]);
      try {
        const count = 'python print("ko objfiles", len([o for o in gdb.objfiles() if ' +
          'o.filename and o.filename.endswith("qemu_fw_cfg.ko")]))';
        const r = await runGdb([
          `target remote 127.0.0.1:${server.port}`,
          "monitor lsmod",
          "monitor sym fw_cfg_sysfs_probe",
          "monitor sym fw_cfg_sel_ko",
          "monitor sym fw_cfg_rev",
          "monitor sym __this_module",
          `source ${KDUMP_PY}`,
          `kdump-load-modules ${modules}`,
          "echo BSS\\n",
          "p/x (unsigned long)&fw_cfg_sel_ko",
          "echo MODULE\\n",
          "p/x (unsigned long)&__this_module",
          "p __this_module.name",
          "p fw_cfg_sel_ko->name",
          "p fw_cfg_top_ko->name",
          // Sections the kernel did not load (.modinfo) are not at 0: NULL is no symbol.
          "info symbol 0",
          "p (void *) 0",
          // The module's init ran and the kernel freed its .init sections: their old place
          // (which sect_attrs still lists) is nobody's, and __init code is parked with them.
          "python m = [m for m in kernel_modules() if m.name == 'qemu_fw_cfg'][0]; " +
          "print('INIT', m.init_freed, gdb.execute('info symbol %d' % " +
          "(m.sections['.init.text'] + 0x10), to_string=True).strip())",
          "echo INITFN\\n",
          "p/x (unsigned long)&fw_cfg_sysfs_init",
          "echo REV\\n",
          "p/x fw_cfg_rev",
          "info line fw_cfg_sysfs_probe",
          // The module's ELF symbols (the minimal symbols), at the kallsyms address.
          "python import re; print('TEXT', gdb.execute('info symbol %d' % int(re.search(" +
          "'= (0x[0-9a-f]+)', gdb.execute('monitor sym fw_cfg_sysfs_probe', to_string=True))" +
          ".group(1), 16), to_string=True).strip())",
          // Again: the module's symbols are replaced, not added twice.
          `kdump-load-modules ${modules}`,
          count,
        ], { gdb: c.gdb, timeoutMs: 300_000 });
        const out = r.out;

        // The server's own view: struct module from the modules list, kallsyms of the module.
        const lsmod = out.match(/^qemu_fw_cfg\s+\S+.*?\s(0x[0-9a-f]+)\s+0\s+\(Live\)/m);
        assert.ok(lsmod, `monitor lsmod:\n${out}`);
        const modstruct = BigInt(lsmod[1]);
        const kallsymsModule = symValue(out, "__this_module");
        if (kallsymsModule !== undefined) assert.equal(kallsymsModule, modstruct);

        const loaded = out.match(
          /^qemu_fw_cfg\s+(0x[0-9a-f]+)\s+(\S+qemu_fw_cfg\.ko)(?: \(read from a copy: (\S+)\))?$/m,
        );
        assert.ok(loaded, `kdump-load-modules:\n${out}`);
        assert.ok(loaded[2].startsWith(modules), loaded[2]);
        assert.match(out, /^1 module loaded, 0 not$/m);

        // .text, .bss and .gnu.linkonce.this_module each where the kernel placed them: the
        // file's symbol at the module's kallsyms address, the debug information's variables at
        // theirs (where kallsyms has data symbols) and at struct module.
        const file = loaded[3] ?? loaded[2];
        assert.match(
          out,
          new RegExp(
            `^TEXT fw_cfg_sysfs_probe in section \\.text of ${file.replaceAll(".", "\\.")}$`,
            "m",
          ),
        );
        assert.ok(symValue(out, "fw_cfg_sysfs_probe")! >= BigInt(loaded[1]));
        const bss = symValue(out, "fw_cfg_sel_ko");
        if (bss !== undefined) assert.equal(BigInt(tagged(out, "BSS")), bss);
        assert.equal(BigInt(tagged(out, "MODULE")), modstruct);
        // Values the module stored: its own name, and the kobjects its init and probe made
        // (kobject_create_and_add("qemu_fw_cfg", …), then ("by_key", …)).
        assert.match(out, /^\$\d+ = "qemu_fw_cfg", '\\000' <repeats \d+ times>$/m);
        assert.match(out, /^\$\d+ = 0x[0-9a-f]+ "by_key"$/m);
        assert.match(out, /^\$\d+ = 0x[0-9a-f]+ "qemu_fw_cfg"$/m);
        // The debug information came along: source lines.
        assert.match(out, /^Line \d+ of "drivers\/firmware\/qemu_fw_cfg\.c" starts at address/m);
        assert.match(out, /^ko objfiles 1$/m);
        assert.match(out, /^No symbol matches 0\.$/m);
        assert.match(out, /^INIT True No symbol matches \d+\.$/m);
        const initFn = BigInt(tagged(out, "INITFN"));
        assert.ok(initFn >= 0x8000000000000000n && initFn < 0x8000000000100000n, out);
        assert.match(out, /^\$\d+ = \(void \*\) 0x0$/m);

        // kdb's md takes module symbols as kdb's kallsyms_lookup_name does: the same word gdb
        // reads through the module's debug information.
        // (--vmlinux: Debian's arm64 kallsyms lacks the `modules` list head, a data symbol.)
        const kdb = await runServer([
          "-c",
          "md8c1 fw_cfg_sysfs_probe; md4c1 fw_cfg_rev",
          "--vmlinux",
          b.vmlinux,
          b.path(c.dump),
        ]);
        const text = kdb.stdout.match(/^(0x[0-9a-f]+) [0-9a-f]{16} /m);
        assert.ok(text, kdb.stdout + kdb.stderr);
        assert.equal(BigInt(text[1]), symValue(out, "fw_cfg_sysfs_probe"));
        const rev = kdb.stdout.match(/^(0x[0-9a-f]+) ([0-9a-f]{8}) /m);
        if (symValue(out, "fw_cfg_rev") === undefined) {
          assert.match(kdb.stdout, /Illegal numeric value/); // no data symbols in kallsyms
        } else {
          assert.ok(rev, kdb.stdout);
          assert.equal(BigInt(rev[1]), symValue(out, "fw_cfg_rev"));
          assert.equal(BigInt("0x" + rev[2]), BigInt(tagged(out, "REV")));
        }
      } finally {
        await server.stop();
      }
    },
  });
}

Deno.test({
  name: "kdump-load-modules: a missing file, another build, a bad directory (real gdb)",
  ignore: !hasBoot("x86_64-6.1") || !hasBoot("x86_64-6.12"),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const b = boot("x86_64-6.1");
    // The 6.12 kernel's build of the same module, where the 6.1 kernel's is looked for.
    const other = join(debugModules(boot("x86_64-6.12").vmlinux), "kernel/drivers/firmware");
    const empty = await Deno.makeTempDir({ prefix: "kdump_modules_" });
    const broken = await Deno.makeTempDir({ prefix: "kdump_modules_" });
    await Deno.writeFile(join(broken, "qemu_fw_cfg.ko"), new Uint8Array(0));
    const server = await startServer(["--vmlinux", b.vmlinux, b.path("dump.zlib-d31.kdump")]);
    try {
      const r = await runGdb([
        `target remote 127.0.0.1:${server.port}`,
        `source ${KDUMP_PY}`,
        `kdump-load-modules ${empty}`,
        `kdump-load-modules ${broken}`,
        `kdump-load-modules ${other}`,
        `kdump-load-modules ${join(empty, "nonexistent")}`,
        'python print("ko objfiles", len([o for o in gdb.objfiles() if ' +
        'o.filename and o.filename.endswith(".ko")]))',
      ], { timeoutMs: 300_000 });
      const out = r.out;
      assert.match(out, /^qemu_fw_cfg\s+0x[0-9a-f]+\s+not loaded: no qemu_fw_cfg\.ko$/m);
      assert.match(
        out,
        /^qemu_fw_cfg\s+0x[0-9a-f]+\s+not loaded: \S+qemu_fw_cfg\.ko is another build \(build-id [0-9a-f]{40}, the module's [0-9a-f]{40}\)$/m,
      );
      assert.match(
        out,
        /^qemu_fw_cfg\s+0x[0-9a-f]+\s+not loaded: \S+qemu_fw_cfg\.ko is not a 64-bit ELF file$/m,
      );
      assert.equal(out.match(/^0 modules loaded, 1 not$/gm)?.length, 3, out);
      assert.match(out, /kdump-load-modules: \S+nonexistent is not a directory/);
      assert.match(out, /^ko objfiles 0$/m);
    } finally {
      await server.stop();
      await Deno.remove(empty, { recursive: true });
      await Deno.remove(broken, { recursive: true });
    }
  },
});
