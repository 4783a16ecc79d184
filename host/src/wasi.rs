//! A minimal WASI preview1 surface, so modules from toolchains that import it can load:
//! no files, no environment, stdout/stderr into the module log, clocks and randomness.
//! Any other preview1 function a module imports is linked as a trap when it is compiled.

use wasmtime::format_err as anyhow;
use wasmtime::{Caller, Linker};

use crate::abi::HostState;
use crate::logs::LogLevel;

const M: &str = "wasi_snapshot_preview1";
const ERRNO_BADF: u32 = 8;
const ERRNO_INVAL: u32 = 28;

type Res<T> = wasmtime::Result<T>;

fn memory<'a>(c: &'a mut Caller<'_, HostState>) -> Res<&'a mut [u8]> {
    let m = c.data().memory.ok_or_else(|| anyhow!("WASI call before the module's memory is known"))?;
    Ok(m.data_mut(c))
}

fn put(mem: &mut [u8], ptr: u32, bytes: &[u8]) -> Res<()> {
    let start = ptr as usize;
    let end = start.checked_add(bytes.len()).filter(|&e| e <= mem.len());
    let end = end.ok_or_else(|| anyhow!("WASI call: pointer {ptr:#x} outside the module's memory"))?;
    mem[start..end].copy_from_slice(bytes);
    Ok(())
}

fn get(mem: &[u8], ptr: u32, len: u32) -> Res<&[u8]> {
    let start = ptr as usize;
    let end = start.checked_add(len as usize).filter(|&e| e <= mem.len());
    let end = end.ok_or_else(|| anyhow!("WASI call: pointer {ptr:#x} outside the module's memory"))?;
    Ok(&mem[start..end])
}

pub fn link(linker: &mut Linker<HostState>) -> Res<()> {
    for (sizes, _values) in [("environ_sizes_get", "environ_get"), ("args_sizes_get", "args_get")] {
        linker.func_wrap(M, sizes, |mut c: Caller<'_, HostState>, count: u32, size: u32| {
            let mem = memory(&mut c)?;
            put(mem, count, &0u32.to_le_bytes())?;
            put(mem, size, &0u32.to_le_bytes())?;
            Ok(0u32)
        })?;
    }
    for name in ["environ_get", "args_get"] {
        linker.func_wrap(M, name, |_: Caller<'_, HostState>, _: u32, _: u32| Ok(0u32))?;
    }
    linker.func_wrap(
        M,
        "clock_time_get",
        |mut c: Caller<'_, HostState>, clock: u32, _precision: u64, out: u32| {
            let nanos: u64 = match clock {
                0 => (crate::logs::now_micros() as u64).saturating_mul(1000),
                1..=3 => {
                    use std::sync::OnceLock;
                    static START: OnceLock<std::time::Instant> = OnceLock::new();
                    START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
                }
                _ => return Ok(ERRNO_INVAL),
            };
            put(memory(&mut c)?, out, &nanos.to_le_bytes())?;
            Ok(0u32)
        },
    )?;
    linker.func_wrap(M, "random_get", |mut c: Caller<'_, HostState>, ptr: u32, len: u32| {
        let mut bytes = vec![0u8; len as usize];
        let mut state = crate::logs::now_micros() as u64 ^ 0x9e37_79b9_7f4a_7c15;
        for b in &mut bytes {
            // splitmix64: WASI randomness here is for hash seeds, not cryptography.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *b = (z ^ (z >> 31)) as u8;
        }
        put(memory(&mut c)?, ptr, &bytes)?;
        Ok(0u32)
    })?;
    linker.func_wrap(
        M,
        "fd_write",
        |mut c: Caller<'_, HostState>, fd: u32, iovs: u32, iovs_len: u32, written: u32| {
            if fd != 1 && fd != 2 {
                return Ok(ERRNO_BADF);
            }
            let mem = memory(&mut c)?;
            let mut text = Vec::new();
            for i in 0..iovs_len {
                let iov = get(mem, iovs.wrapping_add(i * 8), 8)?;
                let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                text.extend_from_slice(get(mem, ptr, len)?);
            }
            put(mem, written, &(text.len() as u32).to_le_bytes())?;
            let level = if fd == 2 { LogLevel::Warn } else { LogLevel::Info };
            let msg = String::from_utf8_lossy(&text).trim_end().to_string();
            c.data().logs.push(
                level,
                Some(if fd == 1 { "stdout" } else { "stderr" }.into()),
                None,
                None,
                msg,
            );
            Ok(0u32)
        },
    )?;
    linker.func_wrap(M, "fd_close", |_: Caller<'_, HostState>, _: u32| Ok(ERRNO_BADF))?;
    linker.func_wrap(M, "fd_fdstat_get", |_: Caller<'_, HostState>, _: u32, _: u32| Ok(ERRNO_BADF))?;
    linker
        .func_wrap(M, "fd_seek", |_: Caller<'_, HostState>, _: u32, _: i64, _: u32, _: u32| Ok(ERRNO_BADF))?;
    linker.func_wrap(M, "proc_exit", |_: Caller<'_, HostState>, code: u32| -> Res<()> {
        Err(anyhow!("the module called proc_exit({code})"))
    })?;
    linker.func_wrap(M, "sched_yield", |_: Caller<'_, HostState>| Ok(0u32))?;
    Ok(())
}
