// SPDX-License-Identifier: GPL-2.0
//! `crypt <cipher> <key> <iv_offset> <dev> <offset> [<#opt> <opts>...]`:
//! transparent encryption onto `dev`, with dm-crypt's syntax and on-disk
//! format (same key, same data: the same ciphertext).
//!
//! Encryption is the kernel crypto API's ([`Cipher`]), one operation per
//! encryption sector (`sector_size`, 512 by default) with dm-crypt's IV.
//! Writes are encrypted into bounce pages while the request is mapped, on
//! the device's map workqueue ([`Target::needs_worker`]: waiting for
//! reserve pages inside the submitter could wait for its own unsent
//! bios); the transform is synchronous, so it never sleeps on crypto, and
//! the caller's pages stay plaintext. Reads are decrypted in
//! place after the lower read, on the device's workqueue
//! ([`Io::finish_later`]). The key lives with its transform; a new key
//! (`key set`) is a new transform swapped in while the device is
//! suspended, and `key wipe` drops it: until a key is set again, RESUME is
//! refused (dm-crypt's rule) and any I/O fails.

use super::crypt_args::{self, CryptArgs, Key, MAX_API_NAME};
use super::{Ctor, Done, Io, Mapped, Target};
use crate::sys::bdev::BlockDevice;
use crate::sys::bounce::BouncePool;
use crate::sys::crypto::{Cipher, CipherOp};
use crate::sys::disk::{Op, Status};
use crate::sys::limits::QueueLimits;
use crate::vblk::message::{fail, Reply};
use core::fmt;
use kernel::error::code::{EAGAIN, EBUSY, EINVAL, ENOENT, ENOMEM};
use kernel::error::Result;
use kernel::prelude::*;
use kernel::str::CStr;
use kernel::sync::{Arc, SpinLock};

/// Largest IV the target handles (AES takes 16 bytes).
const MAX_IV: usize = 32;

/// A transform with the key it was given (kept for `table --showkeys`;
/// both are wiped when the last request using them is done).
struct Keyed {
    cipher: Cipher,
    /// Decoded straight into this heap allocation and never moved (a moved
    /// `Key` would leave its bytes in the stack slot it left, unwiped).
    key: KBox<Key>,
}

/// A zeroed key in its final home on the heap, for the key to be decoded
/// into.
fn key_home(reply: &mut Reply) -> Result<KBox<Key>> {
    KBox::new(Key::new(), GFP_KERNEL)
        .map_err(|_| reply.fail(ENOMEM, format_args!("out of memory for the crypt key")))
}

#[pin_data]
pub(crate) struct Crypt {
    dev: Arc<BlockDevice>,
    /// The parsed line (its device text is not kept: `dev` says it).
    args: CryptArgs<'static>,
    length: u64,
    /// Bytes of the table's key: a key set later must have as many.
    key_len: usize,
    /// Bounce pages for the ciphertext of writes.
    pool: BouncePool,
    /// The keyed transform; `None` after `key wipe`.
    #[pin]
    keyed: SpinLock<Option<Arc<Keyed>>>,
}

/// Constructor listed in [`super::TYPES`].
pub(super) fn construct(ctor: &mut Ctor<'_>) -> Result<Arc<dyn Target>> {
    let mut key = key_home(ctor.reply)?;
    let parsed = match crypt_args::parse(ctor.args, &mut key) {
        Ok(parsed) => parsed,
        Err(e) => return fail!(ctor.reply, EINVAL, "{e}"),
    };
    if let Err(e) = parsed.check_len(ctor.length) {
        return fail!(ctor.reply, EINVAL, "{e}");
    }
    let key_len = key.len();
    ctor.charge(BouncePool::BYTES, "crypt: the page reserve")?;
    let keyed = new_keyed(&parsed, key, ctor.reply)?;
    let dev = ctor.open_device(parsed.dev)?;
    let Ok(pool) = BouncePool::new() else {
        return fail!(ctor.reply, ENOMEM, "out of memory for crypt's page pool");
    };
    let length = ctor.length;
    let target = pin_init!(Crypt {
        dev,
        args: CryptArgs { dev: "", ..parsed },
        length,
        key_len,
        pool,
        keyed <- kernel::new_spinlock!(Some(keyed), "vblk::Crypt::keyed"),
    });
    match Arc::pin_init(target, GFP_KERNEL) {
        Ok(t) => Ok(t),
        Err(_) => fail!(ctor.reply, ENOMEM, "out of memory constructing crypt"),
    }
}

/// Allocates the line's transform and gives it `key`.
fn new_keyed(args: &CryptArgs<'_>, key: KBox<Key>, reply: &mut Reply) -> Result<Arc<Keyed>> {
    let mut name = [0u8; MAX_API_NAME + 1];
    let name = args.cipher.api_name_with_nul(&mut name);
    let Ok(name) = CStr::from_bytes_with_nul(name) else {
        return fail!(reply, EINVAL, "crypt: bad crypto API name");
    };
    let shown = name.to_str().unwrap_or("?");
    let cipher = match Cipher::new(name, key.as_bytes()) {
        Ok(c) => c,
        // Bad input, not a missing file: EINVAL as for any refused line.
        Err(e) if e == ENOENT => {
            return fail!(
                reply,
                EINVAL,
                "crypt: the kernel has no synchronous cipher '{}' (for '{}'; see /proc/crypto)",
                shown,
                args.cipher.as_str()
            )
        }
        Err(e) => {
            return fail!(
                reply,
                e,
                "crypt: cipher '{}' refused the {}-byte key ({})",
                shown,
                key.len(),
                crate::vblk::message::Errno(e)
            )
        }
    };
    if cipher.iv_size() > MAX_IV || cipher.iv_size() < 8 {
        return fail!(
            reply,
            EINVAL,
            "crypt: cipher '{}' takes a {}-byte IV; 8 to {MAX_IV} supported",
            shown,
            cipher.iv_size()
        );
    }
    if cipher.block_size() > 512 {
        return fail!(
            reply,
            EINVAL,
            "crypt: cipher '{}' has {}-byte blocks (at most 512)",
            shown,
            cipher.block_size()
        );
    }
    match Arc::new(Keyed { cipher, key }, GFP_KERNEL) {
        Ok(k) => Ok(k),
        Err(_) => fail!(reply, ENOMEM, "out of memory setting the crypt key"),
    }
}

impl Crypt {
    /// The keyed transform, unless the key was wiped.
    fn keyed(&self) -> Option<Arc<Keyed>> {
        self.keyed.lock().clone()
    }

    /// Encrypts or decrypts `bytes`, which hold the data from byte `at` of
    /// a piece starting `line_sector` sectors into the line, one
    /// encryption sector at a time with its IV. Fails (changing nothing
    /// more) on data not made of whole, aligned encryption sectors.
    fn crypt(
        &self,
        op: &mut CipherOp<'_>,
        line_sector: u64,
        at: u64,
        bytes: &mut [u8],
        encrypt: bool,
    ) -> Result {
        let size = self.args.sector_size as usize;
        if at.checked_rem(size as u64) != Some(0) || bytes.len().checked_rem(size) != Some(0) {
            return Err(EINVAL);
        }
        let mut iv = [0u8; MAX_IV];
        let iv = iv.get_mut(..op.iv_size()).ok_or(EINVAL)?;
        let mut sector = line_sector + at / 512;
        for block in bytes.chunks_exact_mut(size) {
            self.args.fill_iv(self.args.iv_sector(sector), iv);
            if encrypt {
                op.encrypt(iv, block)?;
            } else {
                op.decrypt(iv, block)?;
            }
            sector += self.args.block_sectors();
        }
        Ok(())
    }

    /// The line's arguments as TABLE shows them, the key in hex only if
    /// `show_key` (zeros otherwise, `-` once wiped).
    fn write_table(&self, show_key: bool, out: &mut dyn fmt::Write) -> fmt::Result {
        let keyed = self.keyed();
        let key = keyed.as_ref().map_or(&[][..], |k| k.key.as_bytes());
        self.args
            .write_table_tail(key, show_key, &DevNumber(&self.dev), out)
    }

    /// Whether a piece (line-relative) covers whole encryption sectors.
    fn aligned(&self, offset: u64, len: u64) -> bool {
        let n = self.args.block_sectors();
        offset.checked_rem(n) == Some(0) && len.checked_rem(n) == Some(0)
    }

    fn key_message(&self, words: &[&str], suspended: bool, reply: &mut Reply) -> Result {
        if !suspended {
            return fail!(
                reply,
                EBUSY,
                "crypt: the device is not suspended (key messages need 'vblkctl suspend' first)"
            );
        }
        match words {
            ["wipe"] => {
                // The transform and key are freed (and wiped) here: no
                // request holds them while the device is suspended.
                let old = self.keyed.lock().take();
                drop(old);
                Ok(())
            }
            ["set", hex] => {
                let mut key = key_home(reply)?;
                if let Err(e) = self.args.decode_key(hex, &mut key) {
                    return fail!(reply, EINVAL, "{e}");
                }
                if key.len() != self.key_len {
                    return fail!(
                        reply,
                        EINVAL,
                        "crypt: the key size may not change ({} bytes, got {})",
                        self.key_len,
                        key.len()
                    );
                }
                let keyed = new_keyed(&self.args, key, reply)?;
                let old = self.keyed.lock().replace(keyed);
                drop(old);
                Ok(())
            }
            _ => fail!(
                reply,
                EINVAL,
                "crypt: unknown key message (accepted: key wipe, key set <hex>)"
            ),
        }
    }
}

/// A lower device as TABLE shows it (`major:minor`).
struct DevNumber<'a>(&'a BlockDevice);

impl fmt::Display for DevNumber<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::write_device(f, self.0)
    }
}

impl Target for Crypt {
    /// Writes take bounce pages (see [`Io::write_copy`]).
    fn needs_worker(&self, op: Op) -> bool {
        op == Op::Write
    }

    fn map(&self, mut io: Io<'_>) -> Mapped {
        let sector = self.args.offset + io.offset();
        match io.op() {
            Op::Read | Op::Write if !self.aligned(io.offset(), io.len()) => {
                io.kill(Status::IO_ERROR)
            }
            Op::Read => {
                if self.keyed().is_none() {
                    return io.kill(Status::IO_ERROR);
                }
                io.finish_later();
                io.remap(&self.dev, sector)
            }
            Op::Write => {
                let Some(keyed) = self.keyed() else {
                    return io.kill(Status::IO_ERROR);
                };
                let line_sector = io.offset();
                let mut failed = false;
                let mut op = keyed.cipher.op();
                io.write_copy(&self.pool, &self.dev, sector, 0, &mut |at, bytes| {
                    if self.crypt(&mut op, line_sector, at, bytes, true).is_err() {
                        // Never let plaintext reach the device.
                        bytes.fill(0);
                        failed = true;
                    }
                });
                if failed {
                    io.kill(Status::IO_ERROR)
                } else {
                    io.remapped()
                }
            }
            Op::Discard if self.args.allow_discards => io.remap(&self.dev, sector),
            // Zeros would have to be encrypted: refused, as dm-crypt.
            Op::Discard | Op::WriteZeroes | Op::Other => io.kill(Status::NOT_SUPPORTED),
            // Flushes go to every device from the framework, not here.
            Op::Flush => io.complete(),
        }
    }

    fn finish(&self, done: &mut Done<'_>) {
        if done.info().op != Op::Read || !done.status().is_ok() {
            return;
        }
        let Some(keyed) = self.keyed() else {
            return done.fail(Status::IO_ERROR);
        };
        let line_sector = done.offset();
        let mut failed = false;
        let mut op = keyed.cipher.op();
        done.modify(&mut |at, bytes| {
            failed |= self.crypt(&mut op, line_sector, at, bytes, false).is_err();
        });
        if failed {
            done.fail(Status::IO_ERROR);
        }
    }

    fn devices(&self, f: &mut dyn FnMut(&BlockDevice, u64, u64)) {
        f(&self.dev, self.args.offset, self.length);
    }

    fn limits(&self, limits: &mut QueueLimits) {
        limits.set_min_block_size(self.args.sector_size);
    }

    fn supports_discard(&self) -> bool {
        self.args.allow_discards && self.dev.supports_discard()
    }

    fn supports_write_zeroes(&self) -> bool {
        false
    }

    fn table_args(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        self.write_table(false, out)
    }

    fn table_args_with_secrets(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        self.write_table(true, out)
    }

    fn preresume(&self, _name: &str, reply: &mut Reply) -> Result {
        if self.keyed().is_none() {
            return fail!(
                reply,
                EAGAIN,
                "crypt: the key is not set (after 'key wipe'; send 'key set <hex>' first)"
            );
        }
        Ok(())
    }

    fn message(&self, _name: &str, message: &str, suspended: bool, reply: &mut Reply) -> Result {
        let mut words = KVec::new();
        for w in message.split_ascii_whitespace() {
            if words.push(w, GFP_KERNEL).is_err() {
                return fail!(reply, ENOMEM, "out of memory");
            }
        }
        match words.split_first() {
            Some((&"key", rest)) => self.key_message(rest, suspended, reply),
            _ => fail!(
                reply,
                EINVAL,
                "crypt: unknown message '{}' ... (accepted: key wipe, key set <hex>)",
                crate::vblk::message::first_word(message)
            ),
        }
    }
}
