/**
 * x86_64 register layout for gdb: the complete `org.gnu.gdb.i386.core` feature (gdb refuses a
 * description that lacks any of its 40 registers, so the x87 ones are declared and sent as
 * unavailable), then `org.gnu.gdb.i386.linux` (orig_rax) and `org.gnu.gdb.i386.segments`
 * (fs_base, gs_base), in that order, as gdbserver lays out its `g` block; then the control
 * registers under QEMU's names.
 *
 * No SSE feature: crash dumps and kernel stacks carry no vector state, and gdb treats the feature
 * as optional.
 *
 * @module
 */

import { defineLayout, type RegisterDef, type RegisterLayout } from "./regs.ts";

/**
 * `struct pt_regs` of x86_64 in gdb's register names (its layout is the kernel's ABI for entry
 * code); `struct user_regs_struct` of NT_PRSTATUS notes starts with the same 21 words.
 */
export const PT_REGS_NAMES = [
  "r15",
  "r14",
  "r13",
  "r12",
  "rbp",
  "rbx",
  "r11",
  "r10",
  "r9",
  "r8",
  "rax",
  "rcx",
  "rdx",
  "rsi",
  "rdi",
  "orig_rax",
  "rip",
  "cs",
  "eflags",
  "rsp",
  "ss",
] as const;

const EFLAGS_TYPE = `
<flags id="i386_eflags" size="4">
<field name="CF" start="0" end="0"/>
<field name="" start="1" end="1"/>
<field name="PF" start="2" end="2"/>
<field name="AF" start="4" end="4"/>
<field name="ZF" start="6" end="6"/>
<field name="SF" start="7" end="7"/>
<field name="TF" start="8" end="8"/>
<field name="IF" start="9" end="9"/>
<field name="DF" start="10" end="10"/>
<field name="OF" start="11" end="11"/>
<field name="NT" start="14" end="14"/>
<field name="RF" start="16" end="16"/>
<field name="VM" start="17" end="17"/>
<field name="AC" start="18" end="18"/>
<field name="VIF" start="19" end="19"/>
<field name="VIP" start="20" end="20"/>
<field name="ID" start="21" end="21"/>
</flags>`;

const gpr = (name: string, type = "int64"): RegisterDef => ({ name, bits: 64, type });

const core: RegisterDef[] = [
  gpr("rax"),
  gpr("rbx"),
  gpr("rcx"),
  gpr("rdx"),
  gpr("rsi"),
  gpr("rdi"),
  gpr("rbp", "data_ptr"),
  gpr("rsp", "data_ptr"),
  ...["r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"].map((n) => gpr(n)),
  gpr("rip", "code_ptr"),
  { name: "eflags", bits: 32, type: "i386_eflags" },
  ...["cs", "ss", "ds", "es", "fs", "gs"].map((name) => ({ name, bits: 32, type: "int32" })),
  ...Array.from({ length: 8 }, (_, i) => ({ name: `st${i}`, bits: 80, type: "i387_ext" })),
  ...["fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop"].map((name) => ({
    name,
    bits: 32,
    type: "int",
    group: "float",
  })),
];

/** The x86_64 layout: 50 registers, 356 bytes of `g`. */
export const X86_64_LAYOUT: RegisterLayout = defineLayout("x86_64", "i386:x86-64", [
  { name: "org.gnu.gdb.i386.core", typesXml: EFLAGS_TYPE, registers: core },
  { name: "org.gnu.gdb.i386.linux", registers: [{ name: "orig_rax", bits: 64, type: "int" }] },
  {
    name: "org.gnu.gdb.i386.segments",
    registers: [
      { name: "fs_base", bits: 64, type: "int" },
      { name: "gs_base", bits: 64, type: "int" },
    ],
  },
  // The system registers QEMU's gdbstub offers, with its names, so that `p/x $cr3` works on a
  // dump and on a live QEMU alike. gdb knows no feature for them and keeps them as they are;
  // group "system" keeps them out of a plain `info registers`. A dump has what QEMU's notes
  // hold (cr0, cr2, cr3, cr4, k_gs_base); cr8 and efer read as unavailable there.
  {
    name: "org.kdump-gdbserver.i386.system",
    registers: ["k_gs_base", "cr0", "cr2", "cr3", "cr4", "cr8", "efer"].map((name) => ({
      name,
      bits: 64,
      type: "int",
      group: "system",
    })),
  },
]);
