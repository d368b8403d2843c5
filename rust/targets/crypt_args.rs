// SPDX-License-Identifier: GPL-2.0
//! Arguments of the `crypt` target, parsed and printed the way dm-crypt
//! (Linux 6.12) does, and its IV generators. Pure `core`, host-tested
//! through vblkctl.
//!
//! `<cipher> <key> <iv_offset> <device path> <offset> [<#opt_params> <opt_params>...]`
//! with the cipher as `cipher[:1]-chainmode-ivmode[:ivopts]` or
//! `capi:<crypto API name>-ivmode[:ivopts]`, the IV modes `plain`,
//! `plain64`, `plain64be` and `essiv:<hash>`, the key in hex, and the
//! optional parameters `allow_discards`, `same_cpu_crypt`,
//! `submit_from_crypt_cpus`, `no_read_workqueue`, `no_write_workqueue`,
//! `sector_size:<bytes>` and `iv_large_sectors`.
//!
//! The key is never put into an error message, nor kept in [`CryptArgs`]:
//! it is decoded into a caller's [`Key`], which zeroes itself on drop.

use core::fmt;

/// Longest key: 512 bits (AES-256-XTS).
pub const MAX_KEY_BYTES: usize = 64;
/// Longest crypto API name (without NUL). The kernel's
/// `CRYPTO_MAX_ALG_NAME` is 128 with the NUL; vblk is stricter.
pub const MAX_API_NAME: usize = 63;
/// Longest cipher specification text kept for printing.
pub const MAX_CIPHER_TEXT: usize = 96;

/// How the IV of each encryption block is made from its IV sector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IvMode {
    /// Low 32 bits, little-endian, at the IV's start.
    Plain,
    /// 64 bits, little-endian, at the IV's start.
    Plain64,
    /// 64 bits, big-endian, at the IV's end.
    Plain64Be,
    /// Like `Plain64`; the `essiv(...)` crypto template encrypts it.
    Essiv,
}

impl IvMode {
    pub fn name(self) -> &'static str {
        match self {
            IvMode::Plain => "plain",
            IvMode::Plain64 => "plain64",
            IvMode::Plain64Be => "plain64be",
            IvMode::Essiv => "essiv",
        }
    }
}

/// A parsed cipher specification, kept inline (no borrow) so that a
/// target can store it and print it back as given.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cipher {
    text: [u8; MAX_CIPHER_TEXT],
    len: u8,
    capi: bool,
    /// Old form: cipher name and chain mode; `capi:` form: the API name
    /// (in `name`; `chain` empty).
    name: (u8, u8),
    chain: (u8, u8),
    /// The essiv hash (empty unless `iv_mode` is `Essiv`).
    hash: (u8, u8),
    iv_mode: IvMode,
}

/// A key decoded from hex. Zeroes itself on drop.
pub struct Key {
    bytes: [u8; MAX_KEY_BYTES],
    len: usize,
}

/// A parsed `crypt` line (the key is in the caller's [`Key`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CryptArgs<'a> {
    pub cipher: Cipher,
    /// Added to the line-relative sector to get the IV sector.
    pub iv_offset: u64,
    pub dev: &'a str,
    /// Start on the device, in 512-byte sectors.
    pub offset: u64,
    pub allow_discards: bool,
    pub same_cpu_crypt: bool,
    pub submit_from_crypt_cpus: bool,
    pub no_read_workqueue: bool,
    pub no_write_workqueue: bool,
    /// Encryption block size in bytes: a power of two from 512 to 4096.
    pub sector_size: u32,
    /// IV sectors count in `sector_size` units instead of 512 bytes.
    pub iv_large_sectors: bool,
}

/// What is wrong with a `crypt` line; `Display` gives the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptError<'a> {
    Count(usize),
    CipherTooLong(usize),
    CipherForm(&'a str),
    KeyCount(&'a str),
    NoChainMode(&'a str),
    Ecb,
    NoIvMode(&'a str),
    UnknownIvMode(&'a str),
    EssivHash,
    IvOpts {
        mode: &'static str,
        opts: &'a str,
    },
    Name {
        what: &'static str,
        text: &'a str,
    },
    NameTooLong(usize),
    NoKey,
    Keyring,
    /// 1-based position of the first non-hex character.
    KeyChar(usize),
    KeyOddLength(usize),
    /// Key bytes given.
    KeyTooLong(usize),
    KeySize {
        mode: &'static str,
        bytes: usize,
        expected: &'static str,
    },
    Number {
        what: &'static str,
        text: &'a str,
    },
    OptCount {
        declared: u64,
        present: usize,
    },
    UnknownOption(&'a str),
    Integrity(&'a str),
    SectorSize(&'a str),
    /// `what` ("iv_offset", "device offset", "target length") is not a
    /// multiple of sector_size / 512.
    Align {
        what: &'static str,
        value: u64,
        sector_size: u32,
    },
}

/// Quotes user text in a message, unless it looks like a misplaced key
/// (32 or more hex digits), which is not shown.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() >= 32 && self.0.bytes().all(|b| b.is_ascii_hexdigit()) {
            write!(f, "<{} hex digits, not shown>", self.0.len())
        } else {
            write!(f, "'{}'", self.0)
        }
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl fmt::Display for CryptError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CryptError::Count(got) => write!(
                f,
                "target 'crypt' takes '<cipher> <key> <iv_offset> <device path> <offset> [<#opt_params> <opt_params>...]', got {got} argument{}",
                plural(got as u64)
            ),
            CryptError::CipherTooLong(n) => write!(
                f,
                "crypt: cipher specification is {n} bytes long, at most {MAX_CIPHER_TEXT} are supported"
            ),
            CryptError::CipherForm(t) => write!(
                f,
                "crypt: cipher {} has crypto API parentheses but no 'capi:' prefix (write capi:<crypto API name>-<ivmode>, e.g. capi:xts(aes)-plain64)",
                Shown(t)
            ),
            CryptError::KeyCount(t) => write!(
                f,
                "crypt: cipher key count {} is not supported (only 1 key per cipher)",
                Shown(t)
            ),
            CryptError::NoChainMode(t) => write!(
                f,
                "crypt: cipher {} names no chain mode and IV mode; write <cipher>-<chainmode>-<ivmode>, e.g. aes-xts-plain64 (dm's old default cbc-plain is not implied)",
                Shown(t)
            ),
            CryptError::Ecb => write!(
                f,
                "crypt: chain mode ecb uses no IV and is not supported (IV mode required; e.g. aes-xts-plain64 or aes-cbc-essiv:sha256)"
            ),
            CryptError::NoIvMode(t) => write!(
                f,
                "crypt: cipher {} has no IV mode (IV mode required: plain, plain64, plain64be or essiv:<hash>)",
                Shown(t)
            ),
            CryptError::UnknownIvMode(t) => write!(
                f,
                "crypt: IV mode {} is not supported (plain, plain64, plain64be, essiv:<hash>)",
                Shown(t)
            ),
            CryptError::EssivHash => {
                write!(f, "crypt: IV mode essiv needs a hash, e.g. essiv:sha256")
            }
            CryptError::IvOpts { mode, opts } => write!(
                f,
                "crypt: IV mode {mode} takes no options, got ':{opts}'"
            ),
            CryptError::Name { what, text } => write!(
                f,
                "crypt: {what} {} is not a valid crypto API name (non-empty; letters, digits, '_', '-', '(', ')', ',')",
                Shown(text)
            ),
            CryptError::NameTooLong(n) => write!(
                f,
                "crypt: crypto API name is {n} bytes long, vblk allows at most {MAX_API_NAME} (stricter than the kernel's 127)"
            ),
            CryptError::NoKey => write!(
                f,
                "crypt: key '-' (no key) is not supported; give the key in hex"
            ),
            CryptError::Keyring => write!(
                f,
                "crypt: keyring keys are not supported; give the key in hex"
            ),
            CryptError::KeyChar(pos) => write!(
                f,
                "crypt: key character {pos} is not a hex digit (give the key in hex)"
            ),
            CryptError::KeyOddLength(n) => write!(
                f,
                "crypt: key has an odd number of hex digits ({n}); each byte takes two"
            ),
            CryptError::KeyTooLong(bytes) => write!(
                f,
                "crypt: key is {bytes} bytes ({} bits), at most {MAX_KEY_BYTES} bytes (512 bits, 128 hex digits) are supported",
                bytes.saturating_mul(8)
            ),
            CryptError::KeySize {
                mode,
                bytes,
                expected,
            } => write!(
                f,
                "crypt: {mode} needs a key of {expected}, got {bytes} bytes ({} bits)",
                bytes.saturating_mul(8)
            ),
            CryptError::Number { what, text } => write!(
                f,
                "crypt: {what} {} is not a decimal number from 0 to {}",
                Shown(text),
                u64::MAX
            ),
            CryptError::OptCount { declared, present } => write!(
                f,
                "crypt: {declared} optional parameter{} declared, {present} present",
                plural(declared)
            ),
            CryptError::UnknownOption(t) => write!(
                f,
                "crypt: unknown optional parameter {} (allow_discards, same_cpu_crypt, submit_from_crypt_cpus, no_read_workqueue, no_write_workqueue, sector_size:<bytes>, iv_large_sectors)",
                Shown(t)
            ),
            CryptError::Integrity(t) => write!(
                f,
                "crypt: optional parameter {}: integrity (authenticated encryption) is not supported",
                Shown(t)
            ),
            CryptError::SectorSize(t) => write!(
                f,
                "crypt: sector_size {} is not a power of two from 512 to 4096 bytes",
                Shown(t)
            ),
            CryptError::Align {
                what,
                value,
                sector_size,
            } => write!(
                f,
                "crypt: {what} {value} not aligned to sector_size {sector_size}: must be a multiple of {} sectors",
                sector_size >> 9
            ),
        }
    }
}

impl Key {
    pub const fn new() -> Self {
        Key {
            bytes: [0; MAX_KEY_BYTES],
            len: 0,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Zeroes the key with the one wiping helper (`sys::wipe` in the
    /// kernel, `memzero_explicit`; the host crate's stand-in for tests),
    /// which the compiler cannot drop as a dead store.
    pub fn wipe(&mut self) {
        super::wipe(&mut self.bytes);
        self.len = 0;
    }
}

impl Default for Key {
    fn default() -> Self {
        Key::new()
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key {{ len: {}, .. }}", self.len)
    }
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cipher({:?}, {:?})", self.as_str(), self.iv_mode)
    }
}

/// Counts what is written (for the API name's length).
struct Counter(usize);

impl fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 = self.0.saturating_add(s.len());
        Ok(())
    }
}

/// Writes into a byte buffer; fails when it is full.
struct BufWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl fmt::Write for BufWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            *self.buf.get_mut(self.len).ok_or(fmt::Error)? = b;
            self.len = self.len.saturating_add(1);
        }
        Ok(())
    }
}

impl Cipher {
    fn piece(&self, (start, end): (u8, u8)) -> &str {
        let bytes = self.text.get(usize::from(start)..usize::from(end));
        core::str::from_utf8(bytes.unwrap_or(&[])).unwrap_or("")
    }

    /// The specification as given (printed back in the table).
    pub fn as_str(&self) -> &str {
        self.piece((0, self.len))
    }

    pub fn iv_mode(&self) -> IvMode {
        self.iv_mode
    }

    pub fn essiv_hash(&self) -> Option<&str> {
        (self.iv_mode == IvMode::Essiv).then(|| self.piece(self.hash))
    }

    /// The chain mode and cipher when known (`xts`, `aes` for `aes-xts-...`
    /// and for `capi:xts(aes)-...`).
    pub fn chain_and_cipher(&self) -> Option<(&str, &str)> {
        if !self.capi {
            return Some((self.piece(self.chain), self.piece(self.name)));
        }
        let (chain, inner) = self.piece(self.name).strip_suffix(')')?.split_once('(')?;
        (!inner.contains(['(', ')', ','])).then_some((chain, inner))
    }

    /// Writes the crypto API name: `xts(aes)`, `essiv(cbc(aes),sha256)`.
    pub fn write_api_name(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        let hash = self.essiv_hash();
        if hash.is_some() {
            out.write_str("essiv(")?;
        }
        if self.capi {
            out.write_str(self.piece(self.name))?;
        } else {
            write!(out, "{}({})", self.piece(self.chain), self.piece(self.name))?;
        }
        if let Some(hash) = hash {
            write!(out, ",{hash})")?;
        }
        Ok(())
    }

    /// Writes the API name and a NUL into `buf`; returns the name with
    /// its NUL (for `CStr::from_bytes_with_nul`).
    pub fn api_name_with_nul<'b>(&self, buf: &'b mut [u8; MAX_API_NAME + 1]) -> &'b [u8] {
        let mut w = BufWriter { buf, len: 0 };
        // `parse` checked the length, so this fits (else it is empty).
        let len = match self.write_api_name(&mut w) {
            Ok(()) => w.len.min(MAX_API_NAME),
            Err(_) => 0,
        };
        if let Some(nul) = w.buf.get_mut(len) {
            *nul = 0;
        }
        w.buf.get(..=len).unwrap_or(&[])
    }

    fn api_name_len(&self) -> usize {
        let mut n = Counter(0);
        match self.write_api_name(&mut n) {
            Ok(()) => n.0,
            Err(_) => usize::MAX,
        }
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'(' | b')' | b','))
}

fn check_name<'a>(what: &'static str, text: &'a str) -> Result<(), CryptError<'a>> {
    if name_ok(text) {
        Ok(())
    } else {
        Err(CryptError::Name { what, text })
    }
}

/// Where `part` (a subslice of `whole`, at most `MAX_CIPHER_TEXT` long) is.
fn span(whole: &str, part: &str) -> (u8, u8) {
    if part.is_empty() {
        return (0, 0);
    }
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    let end = start.saturating_add(part.len());
    (
        u8::try_from(start).unwrap_or(0),
        u8::try_from(end).unwrap_or(0),
    )
}

fn parse_cipher(text: &str) -> Result<Cipher, CryptError<'_>> {
    let len = match u8::try_from(text.len()) {
        Ok(len) if text.len() <= MAX_CIPHER_TEXT => len,
        _ => return Err(CryptError::CipherTooLong(text.len())),
    };
    let (capi, name, chain, ivmode, opts);
    if let Some(rest) = text.strip_prefix("capi:") {
        // As dm: options after the last ':', IV mode after the last '-'.
        let (rest, o) = match rest.rsplit_once(':') {
            Some((r, o)) => (r, Some(o)),
            None => (rest, None),
        };
        let (api, iv) = rest.rsplit_once('-').ok_or(CryptError::NoIvMode(text))?;
        if api.starts_with("ecb(") {
            return Err(CryptError::Ecb);
        }
        check_name("crypto API name", api)?;
        (capi, name, chain, ivmode, opts) = (true, api, "", iv, o);
    } else {
        if text.contains('(') {
            return Err(CryptError::CipherForm(text));
        }
        // cipher[:keycount]-chainmode-ivmode[:ivopts]
        let (head, rest) = text.split_once('-').ok_or(CryptError::NoChainMode(text))?;
        let (cipher, keycount) = match head.split_once(':') {
            Some((c, k)) => (c, Some(k)),
            None => (head, None),
        };
        if let Some(k) = keycount {
            if !k.bytes().all(|b| b.is_ascii_digit()) || k.parse::<u32>() != Ok(1) {
                return Err(CryptError::KeyCount(k));
            }
        }
        let (ch, iv) = match rest.split_once('-') {
            Some((c, i)) => (c, Some(i)),
            None => (rest, None),
        };
        if ch == "ecb" {
            return Err(CryptError::Ecb);
        }
        let iv = match iv {
            Some(iv) => iv,
            // dm reads `aes-plain` as aes-cbc-plain.
            None if ch == "plain" => return Err(CryptError::NoChainMode(text)),
            None => return Err(CryptError::NoIvMode(text)),
        };
        check_name("cipher", cipher)?;
        check_name("chain mode", ch)?;
        let (iv, o) = match iv.split_once(':') {
            Some((i, o)) => (i, Some(o)),
            None => (iv, None),
        };
        (capi, name, chain, ivmode, opts) = (false, cipher, ch, iv, o);
    }
    let iv_mode = match ivmode {
        "" => return Err(CryptError::NoIvMode(text)),
        "plain" => IvMode::Plain,
        "plain64" => IvMode::Plain64,
        "plain64be" => IvMode::Plain64Be,
        "essiv" => IvMode::Essiv,
        other => return Err(CryptError::UnknownIvMode(other)),
    };
    let hash = match (iv_mode, opts) {
        (IvMode::Essiv, None | Some("")) => return Err(CryptError::EssivHash),
        (IvMode::Essiv, Some(hash)) => {
            check_name("essiv hash", hash)?;
            hash
        }
        (_, Some(opts)) => {
            return Err(CryptError::IvOpts {
                mode: iv_mode.name(),
                opts,
            })
        }
        (_, None) => "",
    };
    let mut c = Cipher {
        text: [0; MAX_CIPHER_TEXT],
        len,
        capi,
        name: span(text, name),
        chain: span(text, chain),
        hash: span(text, hash),
        iv_mode,
    };
    for (d, s) in c.text.iter_mut().zip(text.bytes()) {
        *d = s;
    }
    match c.api_name_len() {
        n if n > MAX_API_NAME => Err(CryptError::NameTooLong(n)),
        _ => Ok(c),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn parse_key(text: &str, key: &mut Key) -> Result<(), CryptError<'static>> {
    if text == "-" {
        return Err(CryptError::NoKey);
    }
    if text.starts_with(':') {
        return Err(CryptError::Keyring);
    }
    if let Some(pos) = text.bytes().position(|b| !b.is_ascii_hexdigit()) {
        return Err(CryptError::KeyChar(pos.saturating_add(1)));
    }
    if text.len().checked_rem(2) != Some(0) {
        return Err(CryptError::KeyOddLength(text.len()));
    }
    let bytes = text.len() / 2;
    if bytes > MAX_KEY_BYTES {
        return Err(CryptError::KeyTooLong(bytes));
    }
    // An index loop: zip over `chunks_exact` leaves a panic path that the
    // kernel's objtool warns about.
    let digits = text.as_bytes();
    let digit = |i: usize| digits.get(i).copied().and_then(hex_value).unwrap_or(0);
    for (i, d) in key.bytes.iter_mut().take(bytes).enumerate() {
        *d = (digit(2 * i) << 4) | digit(2 * i + 1);
    }
    key.len = bytes;
    Ok(())
}

/// Checks the key size where the cipher's needs are known (else the
/// kernel's `setkey` decides).
fn check_key_size(cipher: &Cipher, bytes: usize) -> Result<(), CryptError<'static>> {
    let Some((chain, name)) = cipher.chain_and_cipher() else {
        return Ok(());
    };
    // xts(aes) takes two AES keys of 128, 192 or 256 bits each.
    let (mode, ok, expected) = match (chain, name) {
        ("xts", "aes") => (
            "xts(aes)",
            matches!(bytes, 32 | 48 | 64),
            "256, 384 or 512 bits (32, 48 or 64 bytes: two AES keys)",
        ),
        ("xts", _) => (
            "xts",
            bytes.checked_rem(2) == Some(0),
            "an even number of bytes (two equal keys)",
        ),
        ("cbc", "aes") => (
            "cbc(aes)",
            matches!(bytes, 16 | 24 | 32),
            "128, 192 or 256 bits (16, 24 or 32 bytes)",
        ),
        _ => ("", true, ""),
    };
    if ok {
        Ok(())
    } else {
        Err(CryptError::KeySize {
            mode,
            bytes,
            expected,
        })
    }
}

fn number<'a>(what: &'static str, text: &'a str) -> Result<u64, CryptError<'a>> {
    match text.parse::<u64>() {
        Ok(n) if text.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(CryptError::Number { what, text }),
    }
}

/// Parses a `crypt` line's arguments (after the target name), decoding
/// the key into `key` (wiped if the line is refused).
///
/// The cipher is returned inline (no borrow of `args`); only `dev` borrows.
pub fn parse<'a>(args: &'a str, key: &mut Key) -> Result<CryptArgs<'a>, CryptError<'a>> {
    key.wipe();
    let parsed = parse_line(args, key);
    if parsed.is_err() {
        key.wipe();
    }
    parsed
}

fn parse_line<'a>(args: &'a str, key: &mut Key) -> Result<CryptArgs<'a>, CryptError<'a>> {
    let count = args.split_ascii_whitespace().count();
    if count < 5 {
        return Err(CryptError::Count(count));
    }
    let mut words = args.split_ascii_whitespace();
    let mut next = || words.next().unwrap_or("");
    let cipher_text = next();
    let key_text = next();
    let cipher = parse_cipher(cipher_text)?;
    parse_key(key_text, key)?;
    check_key_size(&cipher, key.len)?;
    let iv_offset = number("iv_offset", next())?;
    let dev = next();
    let offset = number("device offset", next())?;
    let mut a = CryptArgs {
        cipher,
        iv_offset,
        dev,
        offset,
        allow_discards: false,
        same_cpu_crypt: false,
        submit_from_crypt_cpus: false,
        no_read_workqueue: false,
        no_write_workqueue: false,
        sector_size: 512,
        iv_large_sectors: false,
    };
    if count > 5 {
        let declared = number("number of optional parameters", next())?;
        let present = count.saturating_sub(6);
        if declared != present as u64 {
            return Err(CryptError::OptCount { declared, present });
        }
        // As dm, an option given twice is accepted; the last one wins.
        for _ in 0..present {
            let opt = next();
            let is = |name: &str| opt.eq_ignore_ascii_case(name);
            if is("allow_discards") {
                a.allow_discards = true;
            } else if is("same_cpu_crypt") {
                a.same_cpu_crypt = true;
            } else if is("submit_from_crypt_cpus") {
                a.submit_from_crypt_cpus = true;
            } else if is("no_read_workqueue") {
                a.no_read_workqueue = true;
            } else if is("no_write_workqueue") {
                a.no_write_workqueue = true;
            } else if is("iv_large_sectors") {
                a.iv_large_sectors = true;
            } else if let Some(size) = opt.strip_prefix("sector_size:") {
                a.sector_size = match size.parse::<u32>() {
                    Ok(n) if n.is_power_of_two() && (512..=4096).contains(&n) => n,
                    _ => return Err(CryptError::SectorSize(size)),
                };
            } else if opt
                .get(..10)
                .is_some_and(|p| p.eq_ignore_ascii_case("integrity:"))
            {
                return Err(CryptError::Integrity(opt));
            } else {
                return Err(CryptError::UnknownOption(opt));
            }
        }
    }
    // dm-crypt does not check the device offset; vblk wants every
    // encryption block aligned to its size on the device too.
    for (what, value) in [("iv_offset", iv_offset), ("device offset", offset)] {
        if value.checked_rem(a.block_sectors()) != Some(0) {
            return Err(CryptError::Align {
                what,
                value,
                sector_size: a.sector_size,
            });
        }
    }
    Ok(a)
}

impl CryptArgs<'_> {
    /// Decodes a key given later (dm-crypt's `key set <hex>` message) for
    /// this line's cipher into `key`, wiped if refused.
    pub fn decode_key(&self, text: &str, key: &mut Key) -> Result<(), CryptError<'static>> {
        key.wipe();
        let decoded = parse_key(text, key).and_then(|()| check_key_size(&self.cipher, key.len));
        if decoded.is_err() {
            key.wipe();
        }
        decoded
    }

    /// Writes the crypto API name: `xts(aes)`, `essiv(cbc(aes),sha256)`.
    pub fn write_api_name(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        self.cipher.write_api_name(out)
    }

    /// 512-byte sectors per encryption block (1 to 8).
    pub fn block_sectors(&self) -> u64 {
        u64::from(self.sector_size >> 9).max(1)
    }

    /// The IV sector of the encryption block that starts `line_sector`
    /// 512-byte sectors into the line, as dm-crypt computes it.
    pub fn iv_sector(&self, line_sector: u64) -> u64 {
        // dm's sector_t arithmetic wraps.
        let sector = line_sector.wrapping_add(self.iv_offset);
        if self.iv_large_sectors {
            let shift = self.sector_size.trailing_zeros().saturating_sub(9);
            sector.checked_shr(shift).unwrap_or(0)
        } else {
            sector
        }
    }

    /// Fills `iv` (the cipher's IV size, 16 for AES) for `iv_sector`.
    /// An IV shorter than 8 bytes gets what fits (dm never has one).
    pub fn fill_iv(&self, iv_sector: u64, iv: &mut [u8]) {
        fn put(iv: &mut [u8], at: usize, bytes: &[u8]) {
            for (d, s) in iv.iter_mut().skip(at).zip(bytes) {
                *d = *s;
            }
        }
        iv.fill(0);
        match self.cipher.iv_mode {
            // `iv_sector & 0xffffffff`, like dm.
            IvMode::Plain => put(iv, 0, &(iv_sector as u32).to_le_bytes()),
            IvMode::Plain64 | IvMode::Essiv => put(iv, 0, &iv_sector.to_le_bytes()),
            IvMode::Plain64Be => put(iv, iv.len().saturating_sub(8), &iv_sector.to_be_bytes()),
        }
    }

    /// Checks the line's length (in 512-byte sectors) against sector_size.
    pub fn check_len(&self, target_len_sectors: u64) -> Result<(), CryptError<'static>> {
        if target_len_sectors.checked_rem(self.block_sectors()) == Some(0) {
            Ok(())
        } else {
            Err(CryptError::Align {
                what: "target length",
                value: target_len_sectors,
                sector_size: self.sector_size,
            })
        }
    }

    /// Writes the line's arguments as dm-crypt's TABLE status does:
    /// `<cipher> <key> <iv_offset> <dev> <offset> [<count> <options>]`.
    /// Unless `show_key`, the key is printed as as many '0's as it has hex
    /// digits (what dmsetup shows without --showkeys).
    pub fn write_table_tail(
        &self,
        key: &[u8],
        show_key: bool,
        dev: &dyn fmt::Display,
        out: &mut dyn fmt::Write,
    ) -> fmt::Result {
        out.write_str(self.cipher.as_str())?;
        out.write_char(' ')?;
        if key.is_empty() {
            out.write_char('-')?;
        }
        for b in key {
            if show_key {
                write!(out, "{b:02x}")?;
            } else {
                out.write_str("00")?;
            }
        }
        write!(out, " {} {dev} {}", self.iv_offset, self.offset)?;
        let options = [
            (self.allow_discards, "allow_discards"),
            (self.same_cpu_crypt, "same_cpu_crypt"),
            (self.submit_from_crypt_cpus, "submit_from_crypt_cpus"),
            (self.no_read_workqueue, "no_read_workqueue"),
            (self.no_write_workqueue, "no_write_workqueue"),
            (self.sector_size != 512, "sector_size:"),
            (self.iv_large_sectors, "iv_large_sectors"),
        ];
        let count = options.iter().filter(|(on, _)| *on).count();
        if count > 0 {
            write!(out, " {count}")?;
        }
        for (on, name) in options {
            if on {
                write!(out, " {name}")?;
                if name == "sector_size:" {
                    write!(out, "{}", self.sector_size)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;
    use std::string::{String, ToString};

    const K16: &str = "00112233445566778899AABBCCDDEEFF";
    const K32: &str = "00112233445566778899aabbccddeeff0f1e2d3c4b5a69788796a5b4c3d2e1f0";

    /// Parses `line` (K16/K32 stand for keys); the result keeps no borrow.
    fn args(line: &str) -> (CryptArgs<'static>, Key) {
        let line = line.replace("K32", K32).replace("K16", K16);
        let mut key = Key::new();
        let a = parse(&line, &mut key).unwrap_or_else(|e| panic!("{line}: {e}"));
        (CryptArgs { dev: "", ..a }, key)
    }

    fn tail(line: &str, show_key: bool) -> String {
        let (a, key) = args(line);
        let mut s = String::new();
        let dev = "7:0";
        a.write_table_tail(key.as_bytes(), show_key, &dev, &mut s)
            .unwrap();
        s
    }

    /// `<cipher> <key> => <API name> <IV mode> [<essiv hash>]`.
    const SPECS: &str = "\
        aes-xts-plain64 K32 => xts(aes) plain64
        aes-xts-plain K32K32 => xts(aes) plain
        aes-xts-plain64be K32 => xts(aes) plain64be
        aes:1-cbc-plain64 K16 => cbc(aes) plain64
        aes-cbc-essiv:sha256 K16 => essiv(cbc(aes),sha256) essiv sha256
        aes-cbc-essiv:sha3-256 K32 => essiv(cbc(aes),sha3-256) essiv sha3-256
        aes-xts-essiv:sha256 K32 => essiv(xts(aes),sha256) essiv sha256
        serpent-xts-plain64 K16 => xts(serpent) plain64
        capi:xts(aes)-plain64 K32 => xts(aes) plain64
        capi:xts(aes)-plain K32 => xts(aes) plain
        capi:xts(aes)-plain64be K32K32 => xts(aes) plain64be
        capi:cbc(aes)-essiv:sha256 K16 => essiv(cbc(aes),sha256) essiv sha256
        capi:cbc(aes)-essiv:sha3-256 K16 => essiv(cbc(aes),sha3-256) essiv sha3-256
        capi:xts(aes-generic)-plain64 K16 => xts(aes-generic) plain64";

    #[test]
    fn cipher_specs() {
        for case in SPECS.lines() {
            let (spec_key, want) = case.trim().split_once(" => ").unwrap();
            let (a, _key) = args(&format!("{spec_key} 0 /dev/sdb 0"));
            let spec = spec_key.split(' ').next().unwrap();
            let mut name = String::new();
            a.write_api_name(&mut name).unwrap();
            let mode = a.cipher.iv_mode().name();
            let got = match a.cipher.essiv_hash() {
                Some(hash) => format!("{name} {mode} {hash}"),
                None => format!("{name} {mode}"),
            };
            assert_eq!(got, want, "{spec}");
            assert_eq!(a.cipher.as_str(), spec);
            let mut buf = [0xff; MAX_API_NAME + 1];
            let c = a.cipher.api_name_with_nul(&mut buf);
            assert_eq!(c, format!("{name}\0").as_bytes());
        }
        // xts(aes) also takes AES-192 keys (48 bytes), as the kernel does.
        assert_eq!(args("aes-xts-plain64 K32K16 0 d 0").1.len(), 48);
        let (a, k) = args("capi:cbc(aes)-essiv:sha256 K16 0 d 0");
        assert_eq!(a.cipher.chain_and_cipher(), Some(("cbc", "aes")));
        assert_eq!(
            k.as_bytes().first().zip(k.as_bytes().last()),
            Some((&0x00, &0xff))
        );
        assert_eq!(k.as_bytes().get(1..4), Some(&[0x11, 0x22, 0x33][..]));
        assert_eq!(format!("{k:?}"), "Key { len: 16, .. }");
        assert_eq!(
            format!("{:?}", a.cipher),
            "Cipher(\"capi:cbc(aes)-essiv:sha256\", Essiv)"
        );
    }

    fn iv(spec: &str, sector: u64) -> [u8; 16] {
        let (a, _key) = args(&format!("{spec} K32 0 7:0 0"));
        let mut iv = [0xaa; 16];
        a.fill_iv(sector, &mut iv);
        iv
    }

    #[test]
    fn ivs() {
        let s = 0x0123_4567_89ab_cdef;
        let le = [
            0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let truncated = [0xef, 0xcd, 0xab, 0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let be = [
            0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
        ];
        assert_eq!(
            iv("aes-xts-plain", s),
            truncated,
            "plain keeps the low 32 bits"
        );
        assert_eq!(iv("aes-xts-plain", 1 << 32), [0; 16]);
        assert_eq!(iv("aes-xts-plain64", s), le);
        assert_eq!(iv("aes-cbc-essiv:sha256", s), le);
        assert_eq!(iv("capi:xts(aes)-plain64be", s), be);
        let mut one = [0; 16];
        one[0] = 1;
        assert_eq!(iv("aes-xts-plain", 1), one);
        assert_eq!(iv("aes-xts-plain64", 1), one);
        let mut high = [0; 16];
        high[4] = 1;
        assert_eq!(iv("capi:cbc(aes)-essiv:sha256", 1 << 32), high);
        let mut last = [0; 16];
        last[15] = 1;
        assert_eq!(iv("aes-xts-plain64be", 1), last);
        assert_eq!(iv("aes-xts-plain64be", 0), [0; 16]);
    }

    #[test]
    fn iv_sectors_and_lengths() {
        let (a, _k) = args("aes-xts-plain64 K32 100 7:0 0");
        assert_eq!((a.iv_sector(0), a.iv_sector(5)), (100, 105));
        assert_eq!(a.iv_sector(u64::MAX), 99, "wraps like sector_t");
        let (a, _k) = args("aes-xts-plain64 K32 16 7:0 8 1 sector_size:4096");
        assert_eq!((a.block_sectors(), a.iv_sector(8)), (8, 24));
        let (a, _k) = args("aes-xts-plain64 K32 16 7:0 8 2 sector_size:4096 iv_large_sectors");
        assert_eq!(
            (a.iv_sector(0), a.iv_sector(8), a.iv_sector(80)),
            (2, 3, 12)
        );
        let mut iv = [0xff; 16];
        a.fill_iv(a.iv_sector(8), &mut iv);
        assert_eq!(iv, [3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let (a, _k) = args("aes-xts-plain K32 2 7:0 0 2 iv_large_sectors sector_size:1024");
        assert_eq!(a.iv_sector(6), 4);
        // iv_large_sectors with 512-byte sectors changes nothing.
        let (a, _k) = args("aes-xts-plain K32 2 7:0 0 1 iv_large_sectors");
        assert_eq!((a.iv_sector(6), a.check_len(7)), (8, Ok(())));
        let (a, _k) = args("aes-xts-plain K32 0 7:0 0 1 sector_size:4096");
        assert_eq!(a.check_len(16), Ok(()));
        let e = a.check_len(12).unwrap_err().to_string();
        assert_eq!(
            e,
            "crypt: target length 12 not aligned to sector_size 4096: must be a multiple of 8 sectors"
        );
    }

    #[test]
    fn table() {
        let line = "aes-xts-plain64 K32 0 /dev/sdb 2048";
        assert_eq!(
            tail(line, true),
            format!("aes-xts-plain64 {K32} 0 7:0 2048")
        );
        let hidden = format!("aes-xts-plain64 {} 0 7:0 2048", "0".repeat(64));
        assert_eq!(tail(line, false), hidden);
        // Upper-case hex comes back lower-case; options in dm's order,
        // case-insensitive as in dm; duplicates accepted (last wins).
        let line = "capi:cbc(aes)-essiv:sha256 K16 8 /dev/sdb 16 8 iv_large_sectors \
            no_write_workqueue sector_size:4096 no_read_workqueue submit_from_crypt_cpus \
            same_cpu_crypt ALLOW_DISCARDS allow_discards";
        let want = "capi:cbc(aes)-essiv:sha256 00112233445566778899aabbccddeeff 8 7:0 16 7 \
            allow_discards same_cpu_crypt submit_from_crypt_cpus no_read_workqueue \
            no_write_workqueue sector_size:4096 iv_large_sectors";
        assert_eq!(tail(line, true), want);
        // What TABLE prints parses back to the same line.
        assert_eq!(args(want).0, args(line).0);
        assert_eq!(args(want).1.as_bytes(), args(line).1.as_bytes());
        // sector_size:512 is the default: not printed, nor a count of 0.
        let want = format!("aes-cbc-plain64 {} 0 7:0 0", "0".repeat(32));
        assert_eq!(
            tail("aes-cbc-plain64 K16 0 /dev/sdb 0 1 sector_size:512", false),
            want
        );
        let want = format!("aes-cbc-plain64 {} 0 7:0 0", K16.to_lowercase());
        assert_eq!(tail("aes-cbc-plain64 K16 0 /dev/sdb 0 0", true), want);
        let line = "aes-xts-plain64 K32 0 d 0 2 sector_size:1024 sector_size:2048";
        assert_eq!(args(line).0.sector_size, 2048);
    }

    /// `<line> => <part of the message>`; K16/K32 stand for keys.
    const ERRORS: &str = "\
        a b c d => got 4 arguments
        aes-xts-plain64 K32 0 d 0 1 allow_discards extra => 1 optional parameter declared, 2 present
        aes-xts-plain64 K32 0 d 0 allow_discards => number of optional parameters 'allow_discards' is not a decimal
        xts(aes)-plain64 K32 0 d 0 => cipher 'xts(aes)-plain64' has crypto API parentheses but no 'capi:' prefix
        aes:2-xts-plain64 K32 0 d 0 => cipher key count '2' is not supported (only 1
        aes:x-xts-plain64 K32 0 d 0 => cipher key count 'x' is not supported
        aes K32 0 d 0 => cipher 'aes' names no chain mode
        aes-plain K32 0 d 0 => e.g. aes-xts-plain64 (dm's old default cbc-plain is not implied)
        aes-cbc K16 0 d 0 => cipher 'aes-cbc' has no IV mode (IV mode required
        capi:xts(aes) K32 0 d 0 => cipher 'capi:xts(aes)' has no IV mode
        capi:xts(aes)- K32 0 d 0 => has no IV mode
        aes-ecb K16 0 d 0 => chain mode ecb uses no IV and is not supported (IV mode required
        capi:ecb(aes)-plain K16 0 d 0 => chain mode ecb uses no IV
        aes-cbc-benbi K16 0 d 0 => IV mode 'benbi' is not supported (plain, plain64, plain64be, essiv:<hash>)
        capi:xts(aes)-lmk K32 0 d 0 => IV mode 'lmk' is not supported
        aes-xts-null K32 0 d 0 => IV mode 'null' is not supported
        aes-cbc-essiv K16 0 d 0 => IV mode essiv needs a hash, e.g. essiv:sha256
        capi:cbc(aes)-essiv: K16 0 d 0 => IV mode essiv needs a hash
        aes-xts-plain64:x K32 0 d 0 => IV mode plain64 takes no options, got ':x'
        capi:xts(aes)-plain:y K32 0 d 0 => IV mode plain takes no options, got ':y'
        aes--plain K32 0 d 0 => chain mode '' is not a valid crypto API name
        -xts-plain K32 0 d 0 => cipher '' is not a valid crypto API name
        capi:xts(a.s)-plain K32 0 d 0 => crypto API name 'xts(a.s)' is not a valid crypto API name
        aes-cbc-essiv:sh/a K16 0 d 0 => essiv hash 'sh/a' is not a valid
        capi:cbc(aes)-essiv:HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH K16 0 d 0 => crypto API name is 76 bytes long, vblk allows at most 63
        aes-xts-plain64 K32x 0 d 0 => key character 65 is not a hex digit
        aes-xts-plain64 abcx 0 d 0 => key character 4 is not a hex digit
        aes-xts-plain64 abc 0 d 0 => key has an odd number of hex digits (3)
        aes-xts-plain64 - 0 d 0 => key '-' (no key) is not supported; give the key in hex
        aes-xts-plain64 :32:logon:my:key 0 d 0 => keyring keys are not supported; give the key in hex
        aes-xts-plain64 K32K32K16 0 d 0 => key is 80 bytes (640 bits), at most 64 bytes (512 bits
        aes-xts-plain64 K16 0 d 0 => xts(aes) needs a key of 256, 384 or 512 bits (32, 48 or 64 bytes: two AES keys), got 16 bytes (128 bits)
        capi:xts(aes)-plain64 K320011 0 d 0 => xts(aes) needs a key of 256, 384 or 512 bits (32, 48 or 64 bytes: two AES keys), got 34 bytes
        capi:cbc(aes)-plain K32K16 0 d 0 => cbc(aes) needs a key of 128, 192 or 256 bits (16, 24 or 32 bytes), got 48 bytes (384 bits)
        aes-cbc-essiv:sha256 0011 0 d 0 => cbc(aes) needs a key of 128, 192 or 256 bits
        twofish-xts-plain 001122 0 d 0 => xts needs a key of an even number of bytes (two equal keys), got 3 bytes
        aes-xts-plain64 K32 -1 d 0 => iv_offset '-1' is not a decimal number from 0 to 18446744073709551615
        aes-xts-plain64 K32 +1 d 0 => iv_offset '+1' is not a decimal number
        aes-xts-plain64 K32 0 d 18446744073709551616 => device offset '18446744073709551616' is not a decimal number
        aes-xts-plain64 K32 0 d 0x10 => device offset '0x10' is not a decimal number
        aes-xts-plain64 K32 0 d 0 2 allow_discards => 2 optional parameters declared, 1 present
        aes-xts-plain64 K32 0 d 0 1 high_priority => unknown optional parameter 'high_priority' (allow_discards,
        aes-xts-plain64 K32 0 d 0 1 integrity:28:aead => optional parameter 'integrity:28:aead': integrity (authenticated encryption) is not supported
        aes-xts-plain64 K32 0 d 0 1 sector_size:256 => sector_size '256' is not a power of two from 512 to 4096 bytes
        aes-xts-plain64 K32 0 d 0 1 sector_size:8192 => sector_size '8192' is not a power of two
        aes-xts-plain64 K32 0 d 0 1 sector_size:1000 => sector_size '1000' is not a power of two
        aes-xts-plain64 K32 0 d 0 1 sector_size:abc => sector_size 'abc' is not a power of two
        aes-xts-plain64 K32 0 d 0 1 sector_size: => sector_size '' is not a power of two
        aes-xts-plain64 K32 4 d 0 1 sector_size:4096 => iv_offset 4 not aligned to sector_size 4096: must be a multiple of 8 sectors
        aes-xts-plain64 K32 0 d 1 1 sector_size:1024 => device offset 1 not aligned to sector_size 1024: must be a multiple of 2 sectors
        K32 aes-xts-plain64 0 d 0 => cipher <64 hex digits, not shown> names no chain mode";

    #[test]
    fn errors() {
        let mut n = 0;
        for case in ERRORS.lines() {
            let (line, want) = case.trim().split_once(" => ").unwrap();
            let line = line.replace("K32", K32).replace("K16", K16);
            let mut key = Key::new();
            let msg = match parse(&line, &mut key) {
                Ok(_) => panic!("{line}: accepted"),
                Err(e) => e.to_string(),
            };
            assert!(msg.starts_with("crypt: ") || msg.starts_with("target 'crypt'"));
            assert!(msg.contains(want), "{line}:\n  got  {msg}\n  want {want}");
            assert!(key.is_empty(), "key wiped after an error: {line}");
            let lower = msg.to_lowercase();
            assert!(
                !lower.contains(&K32[..20]) && !lower.contains("00112233445566"),
                "{msg}"
            );
            n += 1;
        }
        assert_eq!(n, 51);
        // A few as values.
        let mut key = Key::new();
        let e = parse("aes-xts-plain64 001122 0 d 0", &mut key);
        let expected = "256, 384 or 512 bits (32, 48 or 64 bytes: two AES keys)";
        let (mode, bytes) = ("xts(aes)", 3);
        assert_eq!(
            e,
            Err(CryptError::KeySize {
                mode,
                bytes,
                expected
            })
        );
        let e = parse("aes-xts-plain64 0011 0 d 0 1 bogus", &mut key);
        assert_eq!(
            e,
            Err(CryptError::KeySize {
                mode,
                bytes: 2,
                expected
            })
        );
        let line = format!("aes-xts-plain64 {K32} 0 d 0 1 bogus");
        assert_eq!(
            parse(&line, &mut key),
            Err(CryptError::UnknownOption("bogus"))
        );
        let long = format!("{} {K32} 0 d 0", "a".repeat(97));
        assert_eq!(parse(&long, &mut key), Err(CryptError::CipherTooLong(97)));
    }

    #[test]
    fn key_wipe() {
        let mut key = Key::new();
        let line = format!("aes-xts-plain64 {K32} 0 d 0");
        parse(&line, &mut key).unwrap();
        assert_eq!(key.len(), 32);
        key.wipe();
        assert!(key.is_empty() && key.bytes == [0; MAX_KEY_BYTES]);
        // A refused line wipes a key left from an earlier parse.
        parse(&line, &mut key).unwrap();
        assert!(parse("aes-xts-plain64 - 0 d 0", &mut key).is_err());
        assert!(key.is_empty() && key.bytes == [0; MAX_KEY_BYTES]);
    }
}
