/**
 * kdump-gdbserver as a library: read Linux kernel crash dumps (ELF, compressed kdump,
 * flattened, split sets), translate kernel virtual addresses through the dumped page tables,
 * and serve the result to gdb over the remote serial protocol.
 *
 * ```ts
 * import { openDump, Kernel, KernelTarget, serveTcp } from "./mod.ts";
 * const kernel = new Kernel(openDump(["vmcore"]), { vmlinux: "vmlinux" });
 * const server = await serveTcp(new KernelTarget(kernel), { port: 1234 });
 * await server.finished;
 * ```
 *
 * @module
 */

export { openDump, type OpenOptions, openSource } from "./lib/open_dump.ts";
export { type DumpReader, PageStatus, pageStatusText, type VirtualMapping } from "./lib/dump.ts";
export { DumpError } from "./lib/errors.ts";
export { type ByteSource, FileSource, MemorySource } from "./lib/file_source.ts";
export { VmcoreInfo } from "./lib/vmcoreinfo.ts";
export type { ElfHeader, ElfNote, ProgramHeader, SectionHeader } from "./lib/elf.ts";
export { type CpuState, parsePrstatus, type QemuCpuState } from "./lib/cpu_notes.ts";
export { ElfDumpReader } from "./lib/dump_elf.ts";
export { KdumpReader } from "./lib/dump_kdump.ts";
export { FlattenedSource, type ProgressFn } from "./lib/flattened.ts";
export { SplitDumpReader } from "./lib/dump_split.ts";
export { CodecError, codecFromFlags, decompressPage, type PageCodec } from "./lib/codecs.ts";
export { PageCache } from "./lib/page_cache.ts";
export {
  DEFAULT_CACHE_BYTES,
  PhysicalMemory,
  type PhysicalMemoryOptions,
  type PhysRead,
} from "./lib/physical_memory.ts";
export {
  type LeafMapping,
  type LinearRange,
  type PageTableWalker,
  type VirtRead,
  VirtualMemory,
  type WalkResult,
} from "./lib/paging.ts";
export {
  findDirectMapBase,
  X86_64Walker,
  type X86PagingInfo,
  x86PagingInfo,
} from "./lib/paging_x86_64.ts";
export { type Arm64PagingInfo, arm64PagingInfo, Arm64Walker } from "./lib/paging_aarch64.ts";
export { Vmlinux } from "./lib/vmlinux.ts";
export { Btf, type MemberInfo } from "./lib/btf.ts";
export { KallsymsTable } from "./lib/kallsyms.ts";
export { type CpuTask, Kernel, type KernelOptions } from "./lib/kernel.ts";
export { cpuThreadName, KernelTarget, systemSummary } from "./lib/kernel_target.ts";
export type {
  ArchName,
  MemoryRead,
  MonitorOutput,
  RegisterValues,
  ResumeAction,
  RunControl,
  StopEvent,
  Target,
  ThreadInfo,
} from "./lib/target.ts";
export { type LiveOptions, LiveTarget } from "./lib/live_target.ts";
export type { LiveFacts } from "./lib/live_discovery.ts";
export { LiveError, QemuStub, type StubNotice } from "./lib/qemu_stub.ts";
export { Qmp, type QmpEvent } from "./lib/qmp.ts";
export {
  MAX_CLIENTS,
  type RspServer,
  type ServeOptions,
  serveStdio,
  serveTcp,
} from "./lib/transport.ts";
export type { BlockingSocket, SocketListener } from "./lib/libc_socket.ts";
export {
  type Backtrace,
  type BacktraceFrame,
  type BacktraceOptions,
  formatBacktrace,
  formatRegisters,
  type FrameBoundary,
  kernelBacktrace,
} from "./lib/backtrace.ts";
export { type OrcEntry, OrcTable, type OrcType } from "./lib/orc.ts";
export { type KdbAction, type KdbCapable, type KdbHooks, KdbShell, type Line } from "./lib/kdb.ts";
export { type KernelLog, logLines, type LogRecord, readKernelLog } from "./lib/dmesg.ts";
export { type SystemFacts, systemFacts } from "./lib/summary.ts";
export { type ModuleInfo, readModules } from "./lib/lsmod.ts";
