// SPDX-License-Identifier: GPL-2.0
//! Symmetric ciphers from the kernel's crypto API (the crypt target's
//! encryption; vblk implements no cipher itself).
//!
//! Transforms that do not allocate per request are used, synchronous or
//! not: the fast SIMD implementations (AES-NI, ...) register as
//! asynchronous but run inline in process context, which is the only
//! context vblk encrypts in (`queue_rq` for writes, the disk's workqueue
//! for reads). Should one complete asynchronously, the caller waits. Each
//! operation takes a request from a per-transform reserve ([`CipherOp`]),
//! so encryption never fails for lack of memory. The key is set once, on a
//! transform nobody else uses yet ([`Cipher::new`]); a new key means a new
//! transform, so no request ever races a key change.

use super::bindings;
use core::ptr::NonNull;
use kernel::error::code::{EINVAL, ENOMEM};
use kernel::error::{to_result, Error, Result};
use kernel::str::CStr;

/// A keyed skcipher (e.g. `xts(aes)`).
pub(crate) struct Cipher {
    tfm: NonNull<bindings::vblk_cipher>,
    iv_size: usize,
    block_size: usize,
}

// SAFETY: a keyed transform may be used from several threads at once: each
// operation has its own request (from the reserve) and only reads the
// transform's key schedule, which is never changed after `new`; the
// reserve is a mempool, safe to share.
unsafe impl Send for Cipher {}
// SAFETY: as above.
unsafe impl Sync for Cipher {}

impl Cipher {
    /// Allocates transform `name` (crypto API name) and sets `key`.
    /// `ENOENT` if the kernel has no such synchronous cipher, `EINVAL` if
    /// it refuses the key.
    pub(crate) fn new(name: &CStr, key: &[u8]) -> Result<Self> {
        let key_len = u32::try_from(key.len()).map_err(|_| EINVAL)?;
        let mut err = 0;
        // SAFETY: `name` is NUL-terminated and lives for the call; may sleep
        // (process context: table construction and messages).
        let raw = unsafe { bindings::vblk_shim_cipher_alloc(name.as_char_ptr().cast(), &mut err) };
        let tfm = NonNull::new(raw).ok_or_else(|| {
            if err == 0 {
                ENOMEM
            } else {
                Error::from_errno(err)
            }
        })?;
        // From here on `cipher` owns the transform (its drop frees it).
        let mut cipher = Cipher {
            tfm,
            iv_size: 0,
            block_size: 0,
        };
        // SAFETY: the transform is live and not shared yet; `key` holds
        // `key_len` bytes that the crypto API copies.
        to_result(unsafe {
            bindings::vblk_shim_cipher_setkey(tfm.as_ptr(), key.as_ptr(), key_len)
        })?;
        // SAFETY: the transform is live.
        cipher.iv_size = unsafe { bindings::vblk_shim_cipher_ivsize(tfm.as_ptr()) } as usize;
        // SAFETY: the transform is live.
        cipher.block_size = unsafe { bindings::vblk_shim_cipher_blocksize(tfm.as_ptr()) } as usize;
        Ok(cipher)
    }

    /// Bytes of IV each operation takes.
    pub(crate) fn iv_size(&self) -> usize {
        self.iv_size
    }

    /// The cipher's block size in bytes (data lengths must be multiples).
    pub(crate) fn block_size(&self) -> usize {
        self.block_size
    }

    /// A request for operations on this cipher (process context; may
    /// wait for one from the reserve).
    pub(crate) fn op(&self) -> CipherOp<'_> {
        // SAFETY: the transform is live; the shim never returns NULL (the
        // mempool waits).
        let req = unsafe { bindings::vblk_shim_cipher_req_get(self.tfm.as_ptr()) };
        CipherOp {
            cipher: self,
            // NULL would be a shim bug: operations then fail (ENOMEM).
            req: NonNull::new(req),
        }
    }
}

/// One request of a [`Cipher`]: encrypts or decrypts buffers one after the
/// other (reusing the request), and returns it to the reserve when dropped.
pub(crate) struct CipherOp<'a> {
    cipher: &'a Cipher,
    req: Option<NonNull<bindings::skcipher_request>>,
}

impl CipherOp<'_> {
    /// Bytes of IV each operation takes.
    pub(crate) fn iv_size(&self) -> usize {
        self.cipher.iv_size
    }

    /// Encrypts `data` in place with `iv` (which the operation changes).
    pub(crate) fn encrypt(&mut self, iv: &mut [u8], data: &mut [u8]) -> Result {
        self.crypt(iv, data, true)
    }

    /// Decrypts `data` in place with `iv` (which the operation changes).
    pub(crate) fn decrypt(&mut self, iv: &mut [u8], data: &mut [u8]) -> Result {
        self.crypt(iv, data, false)
    }

    fn crypt(&mut self, iv: &mut [u8], data: &mut [u8], encrypt: bool) -> Result {
        let req = self.req.ok_or(ENOMEM)?;
        if iv.len() != self.cipher.iv_size {
            return Err(EINVAL);
        }
        let len = u32::try_from(data.len()).map_err(|_| EINVAL)?;
        // SAFETY: the transform is live and keyed, `req` is ours (`&mut
        // self`: one operation at a time); `iv` holds the IV size the
        // transform reads and writes, `data` `len` bytes only we use now
        // (the shim refuses memory outside the linear map, which a
        // scatterlist cannot describe). The shim returns only once the
        // operation is over.
        to_result(unsafe {
            bindings::vblk_shim_cipher_crypt(
                self.cipher.tfm.as_ptr(),
                req.as_ptr(),
                iv.as_mut_ptr(),
                data.as_mut_ptr(),
                len,
                encrypt,
            )
        })
    }
}

impl Drop for CipherOp<'_> {
    fn drop(&mut self) {
        if let Some(req) = self.req {
            // SAFETY: `req` came from this cipher's reserve and no
            // operation uses it any more; returned exactly once.
            unsafe { bindings::vblk_shim_cipher_req_put(self.cipher.tfm.as_ptr(), req.as_ptr()) }
        }
    }
}

impl Drop for Cipher {
    fn drop(&mut self) {
        // SAFETY: the transform is live and freed exactly once; the crypto
        // API wipes its key schedule (kfree_sensitive) as it frees it.
        unsafe { bindings::vblk_shim_cipher_free(self.tfm.as_ptr()) }
    }
}
