/**
 * AArch64 register layout for gdb: `org.gnu.gdb.aarch64.core` (x0-x30, sp, pc, 32-bit cpsr), then
 * `org.gnu.gdb.aarch64.fpu` (v0-v31, fpsr, fpcr). Dumps carry no FP/SIMD state, so the fpu
 * registers are sent as unavailable; declaring them keeps gdb's usual register set (and its
 * q/d/s/h/b pseudo registers) for targets that do have them.
 *
 * @module
 */

import { defineLayout, type RegisterDef, type RegisterLayout } from "./regs.ts";

const CPSR_TYPE = `
<flags id="cpsr_flags" size="4">
<field name="SP" start="0" end="0"/>
<field name="EL" start="2" end="3"/>
<field name="nRW" start="4" end="4"/>
<field name="F" start="6" end="6"/>
<field name="I" start="7" end="7"/>
<field name="A" start="8" end="8"/>
<field name="D" start="9" end="9"/>
<field name="BTYPE" start="10" end="11"/>
<field name="SSBS" start="12" end="12"/>
<field name="IL" start="20" end="20"/>
<field name="SS" start="21" end="21"/>
<field name="PAN" start="22" end="22"/>
<field name="UAO" start="23" end="23"/>
<field name="DIT" start="24" end="24"/>
<field name="TCO" start="25" end="25"/>
<field name="V" start="28" end="28"/>
<field name="C" start="29" end="29"/>
<field name="Z" start="30" end="30"/>
<field name="N" start="31" end="31"/>
</flags>`;

const VECTOR_TYPES = `
<vector id="v2d" type="ieee_double" count="2"/>
<vector id="v2u" type="uint64" count="2"/>
<vector id="v4f" type="ieee_single" count="4"/>
<vector id="v4u" type="uint32" count="4"/>
<vector id="v8u" type="uint16" count="8"/>
<vector id="v16u" type="uint8" count="16"/>
<union id="aarch64v">
<field name="d" type="v2d"/>
<field name="u" type="v2u"/>
<field name="s" type="v4f"/>
<field name="w" type="v4u"/>
<field name="h" type="v8u"/>
<field name="b" type="v16u"/>
<field name="q" type="uint128"/>
</union>`;

const core: RegisterDef[] = [
  ...Array.from({ length: 31 }, (_, i) => ({ name: `x${i}`, bits: 64, type: "int" })),
  { name: "sp", bits: 64, type: "data_ptr" },
  { name: "pc", bits: 64, type: "code_ptr" },
  { name: "cpsr", bits: 32, type: "cpsr_flags" },
];

const fpu: RegisterDef[] = [
  ...Array.from({ length: 32 }, (_, i) => ({ name: `v${i}`, bits: 128, type: "aarch64v" })),
  { name: "fpsr", bits: 32, type: "int" },
  { name: "fpcr", bits: 32, type: "int" },
];

/**
 * EL1 system registers, by the names QEMU's stub gives them (`p/x $ESR_EL1` works through us as on
 * QEMU): what an exception or a fault needs, and the kernel's own state. Outside `g`, as on QEMU:
 * a live target reads each with a `p` of its own when gdb asks; a dump has none of them.
 */
export const AARCH64_SYSTEM_REGISTERS: readonly string[] = [
  "ESR_EL1",
  "FAR_EL1",
  "ELR_EL1",
  "SPSR_EL1",
  "SP_EL0",
  "SP_EL1",
  "VBAR_EL1",
  "SCTLR_EL1",
  "TCR_EL1",
  "TTBR0_EL1",
  "TTBR1_EL1",
  "MAIR_EL1",
  "CONTEXTIDR_EL1",
  "TPIDR_EL1",
  "TPIDR_EL0",
  "MDSCR_EL1",
];

/** The AArch64 layout: 68 registers, 788 bytes of `g`, then the system registers. */
export const AARCH64_LAYOUT: RegisterLayout = defineLayout("aarch64", "aarch64", [
  { name: "org.gnu.gdb.aarch64.core", typesXml: CPSR_TYPE, registers: core },
  { name: "org.gnu.gdb.aarch64.fpu", typesXml: VECTOR_TYPES, registers: fpu },
  {
    name: "org.kdump-gdbserver.aarch64.system",
    registers: AARCH64_SYSTEM_REGISTERS.map((name) => ({
      name,
      bits: 64,
      type: "int",
      group: "system",
    })),
    outsideG: true,
  },
]);
