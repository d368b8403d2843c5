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
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use kernel::error::code::{EBUSY, EFAULT, EINVAL, ENOMEM};
use kernel::error::{to_result, Error, Result};
use kernel::str::CStr;

/// A keyed skcipher (e.g. `xts(aes)`).
///
/// # Invariants
///
/// `tfm` is a transform from `crypto_alloc_skcipher`, keyed, not changed
/// after `new`; `reqs` a mempool of at least 4 requests sized for it
/// (`sizeof(skcipher_request)` plus its request size). Both are freed only
/// in `drop`.
pub(crate) struct Cipher {
    tfm: NonNull<bindings::crypto_skcipher>,
    reqs: NonNull<bindings::mempool_t>,
    iv_size: usize,
    block_size: usize,
    /// Bytes of each request (wiped when it goes back to the reserve).
    req_bytes: usize,
}

// SAFETY: a keyed transform may be used from several threads at once: each
// operation has its own request (from the reserve) and only reads the
// transform's key schedule, which is never changed after `new`; the
// reserve is a mempool, safe to share.
unsafe impl Send for Cipher {}
// SAFETY: `&Cipher` only takes requests from the mempool and runs
// operations with them, each on its own request; the transform itself is
// only read.
unsafe impl Sync for Cipher {}

impl Cipher {
    /// Allocates transform `name` (crypto API name) and sets `key`.
    /// `ENOENT` if the kernel has no such cipher that runs without
    /// allocating per request, `EINVAL` if it refuses the key.
    pub(crate) fn new(name: &CStr, key: &[u8]) -> Result<Self> {
        let key_len = u32::try_from(key.len()).map_err(|_| EINVAL)?;
        // Any implementation that does not allocate memory per request (it
        // runs on the I/O path, where an allocation could wait on the very
        // I/O it is part of), synchronous or not.
        // SAFETY: `name` is NUL-terminated and lives for the call; may
        // sleep (process context: table construction and messages).
        let raw = unsafe {
            bindings::crypto_alloc_skcipher(
                name.as_char_ptr().cast(),
                0,
                bindings::VBLK_CONST_CRYPTO_ALG_ALLOCATES_MEMORY,
            )
        };
        if let Some(e) = super::err_ptr(raw) {
            return Err(Error::from_errno(e));
        }
        let tfm = NonNull::new(raw).ok_or(ENOMEM)?;
        // SAFETY: `tfm` is a live transform.
        let reqsize = unsafe { bindings::vblk_shim_crypto_skcipher_reqsize(tfm.as_ptr()) } as usize;
        let req_bytes = core::mem::size_of::<bindings::skcipher_request>() + reqsize;
        // SAFETY: the kmalloc allocator pair with the element size as pool
        // data (what `mempool_create_kmalloc_pool` passes); process context.
        let reqs = unsafe {
            bindings::mempool_create_node_noprof(
                4,
                Some(bindings::mempool_kmalloc),
                Some(bindings::mempool_kfree),
                req_bytes as *mut core::ffi::c_void,
                bindings::VBLK_CONST_GFP_KERNEL,
                bindings::VBLK_CONST_NUMA_NO_NODE,
            )
        };
        let Some(reqs) = NonNull::new(reqs) else {
            // SAFETY: allocated above, used by nobody, freed once.
            unsafe { bindings::vblk_shim_crypto_free_skcipher(tfm.as_ptr()) };
            return Err(ENOMEM);
        };
        // INVARIANT: both made above; the key is set before anyone else
        // sees the transform. From here on `cipher`'s drop frees them.
        let mut cipher = Cipher {
            tfm,
            reqs,
            iv_size: 0,
            block_size: 0,
            req_bytes,
        };
        // SAFETY: the transform is live and not shared yet; `key` holds
        // `key_len` bytes that the crypto API copies.
        to_result(unsafe {
            bindings::crypto_skcipher_setkey(tfm.as_ptr(), key.as_ptr(), key_len)
        })?;
        // SAFETY: the transform is live; reads its algorithm's IV size.
        cipher.iv_size =
            unsafe { bindings::vblk_shim_crypto_skcipher_ivsize(tfm.as_ptr()) } as usize;
        // SAFETY: the transform is live; reads its algorithm's block size.
        cipher.block_size =
            unsafe { bindings::vblk_shim_crypto_skcipher_blocksize(tfm.as_ptr()) } as usize;
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
        // SAFETY: the reserve is live (invariant); GFP_NOIO from a mempool
        // waits for an element and never returns null.
        let req = unsafe {
            bindings::mempool_alloc_noprof(self.reqs.as_ptr(), bindings::VBLK_CONST_GFP_NOIO)
        };
        let req = NonNull::new(req.cast::<bindings::skcipher_request>());
        if let Some(r) = req {
            // SAFETY: a request of `req_bytes` bytes, ours; pointing it at
            // the transform (`skcipher_request_set_tfm`).
            unsafe { (*r.as_ptr()).base.tfm = &raw mut (*self.tfm.as_ptr()).base };
        }
        // INVARIANT (of `CipherOp`): `req`, if any, is a request of this
        // cipher's reserve, set to its transform.
        CipherOp { cipher: self, req }
    }
}

/// One request of a [`Cipher`]: encrypts or decrypts buffers one after the
/// other (reusing the request), and returns it to the reserve when dropped.
///
/// # Invariants
///
/// `req`, if any, came from `cipher`'s reserve, is set to its transform,
/// and is used by this value alone.
pub(crate) struct CipherOp<'a> {
    cipher: &'a Cipher,
    /// `None` only if the reserve failed (a kernel bug): operations then
    /// fail with `ENOMEM`.
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
        let req = self.req.ok_or(ENOMEM)?.as_ptr();
        if iv.len() != self.cipher.iv_size {
            return Err(EINVAL);
        }
        let len = u32::try_from(data.len()).map_err(|_| EINVAL)?;
        if len == 0 {
            return Ok(());
        }
        let (first, last) = (data.as_ptr(), data[data.len() - 1..].as_ptr());
        // SAFETY: only inspects the addresses: a scatterlist can describe
        // memory in the kernel's linear map only (kmapped lowmem pages,
        // kmalloc), not the stack or vmalloc space.
        if !unsafe {
            bindings::vblk_shim_virt_addr_valid(first.cast())
                && bindings::vblk_shim_virt_addr_valid(last.cast())
        } {
            return Err(EFAULT);
        }
        let mut sg = MaybeUninit::<bindings::scatterlist>::uninit();
        let mut wait = MaybeUninit::<bindings::crypto_wait>::zeroed();
        // SAFETY: `sg` and `wait` live on this frame until the operation is
        // over (we wait for it below); `data` (`len` bytes in the linear
        // map, checked above) and `iv` (the transform's IV size) are ours
        // for the call (`&mut`); `req` is ours (invariant, `&mut self`).
        // The request is set up as `skcipher_request_set_callback` and
        // `skcipher_request_set_crypt` do.
        let rc = unsafe {
            bindings::sg_init_one(sg.as_mut_ptr(), data.as_ptr().cast(), len);
            let w = wait.as_mut_ptr();
            bindings::vblk_shim_init_completion(&raw mut (*w).completion);
            (*req).base.complete = Some(bindings::crypto_req_done);
            (*req).base.data = w.cast();
            (*req).base.flags = bindings::VBLK_CONST_CRYPTO_TFM_REQ_MAY_BACKLOG;
            (*req).src = sg.as_mut_ptr();
            (*req).dst = sg.as_mut_ptr();
            (*req).cryptlen = len;
            (*req).iv = iv.as_mut_ptr();
            let rc = if encrypt {
                bindings::crypto_skcipher_encrypt(req)
            } else {
                bindings::crypto_skcipher_decrypt(req)
            };
            // Queued (asynchronous transform or backlog): wait for the
            // callback, which stores the result (`crypto_wait_req`).
            if rc == -bindings::VBLK_CONST_EINPROGRESS || rc == EBUSY.to_errno() {
                bindings::wait_for_completion(&raw mut (*w).completion);
                (*w).err
            } else {
                rc
            }
        };
        to_result(rc)
    }
}

impl Drop for CipherOp<'_> {
    fn drop(&mut self) {
        if let Some(req) = self.req {
            // SAFETY: `req` came from this cipher's reserve, holds
            // `req_bytes` bytes and no operation uses it any more; wiped
            // (`skcipher_request_zero`: it may hold key-derived state) and
            // returned exactly once.
            unsafe {
                super::wipe(core::slice::from_raw_parts_mut(
                    req.as_ptr().cast::<u8>(),
                    self.cipher.req_bytes,
                ));
                bindings::mempool_free(req.as_ptr().cast(), self.cipher.reqs.as_ptr());
            }
        }
    }
}

impl Drop for Cipher {
    fn drop(&mut self) {
        // SAFETY: both are live (invariant), every request is back (each
        // `CipherOp` borrows the cipher), and each is freed exactly once;
        // the crypto API wipes the key schedule (kfree_sensitive) as it
        // frees the transform.
        unsafe {
            bindings::mempool_destroy(self.reqs.as_ptr());
            bindings::vblk_shim_crypto_free_skcipher(self.tfm.as_ptr());
        }
    }
}
