//! The agent's `Cipher` (Node's deprecated `crypto.createCipher('aes256',
//! secret)`), used by the Axon transporter: AES-256-CBC with PKCS#7, key and
//! IV from OpenSSL's `EVP_BytesToKey(MD5, no salt, 1 round)` over the UTF-8
//! secret, ciphertext as lowercase hex. The IV is fixed per secret, which is
//! what the backend expects (docs/protocols.md §5).

use aes::Aes256;
use cbc::cipher::{block_padding::Pkcs7, BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use md5::{Digest, Md5};

#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    #[error("ciphertext is not hex")]
    NotHex,
    #[error("ciphertext is not a whole number of AES blocks or its padding is wrong")]
    BadPadding,
    #[error("deciphered data is not UTF-8")]
    NotUtf8,
    #[error("deciphered data is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
}

/// Key and IV derived from one secret; cheap to clone, derive once per agent.
#[derive(Clone)]
pub struct Cipher {
    key: [u8; 32],
    iv: [u8; 16],
}

impl std::fmt::Debug for Cipher {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)")
    }
}

impl Cipher {
    pub fn new(secret: &str) -> Self {
        let pw = secret.as_bytes();
        let d1 = Md5::digest(pw);
        let d2 = Md5::new().chain_update(d1).chain_update(pw).finalize();
        let d3 = Md5::new().chain_update(d2).chain_update(pw).finalize();
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(&d1);
        key[16..].copy_from_slice(&d2);
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&d3);
        Cipher { key, iv }
    }

    pub fn encrypt_bytes(&self, plain: &[u8]) -> Vec<u8> {
        cbc::Encryptor::<Aes256>::new_from_slices(&self.key, &self.iv)
            .expect("key and iv have fixed sizes")
            .encrypt_padded_vec::<Pkcs7>(plain)
    }

    pub fn decrypt_bytes(&self, data: &[u8]) -> Result<Vec<u8>, CipherError> {
        cbc::Decryptor::<Aes256>::new_from_slices(&self.key, &self.iv)
            .expect("key and iv have fixed sizes")
            .decrypt_padded_vec::<Pkcs7>(data)
            .map_err(|_| CipherError::BadPadding)
    }

    /// Ciphers a string and returns lowercase hex.
    pub fn encrypt_hex(&self, plain: &str) -> String {
        hex::encode(self.encrypt_bytes(plain.as_bytes()))
    }

    /// Ciphers the JSON text of `value` (what `Cipher.cipherMessage` does).
    pub fn encrypt_json(&self, value: &serde_json::Value) -> String {
        self.encrypt_hex(&value.to_string())
    }

    pub fn decrypt_hex(&self, data: &str) -> Result<String, CipherError> {
        let raw = hex::decode(data.trim()).map_err(|_| CipherError::NotHex)?;
        String::from_utf8(self.decrypt_bytes(&raw)?).map_err(|_| CipherError::NotUtf8)
    }

    /// Deciphers hex and parses the JSON inside (`Cipher.decipherMessage`).
    pub fn decrypt_json(&self, data: &str) -> Result<serde_json::Value, CipherError> {
        Ok(serde_json::from_str(&self.decrypt_hex(data)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Vectors from docs/protocols.md §5 (Node's createCipher with 'secret-key-123').
    const VECTORS: &[(&str, &str)] = &[
        (
            r#"{"machine_name":"m1"}"#,
            "20cc88ff46886de5293d36ad4f8ff585db9214355001f419c7ef37409caa3665",
        ),
        ("hello", "47fce5eea52120b285f62c79da28e85a"),
        ("", "525935fbc88bb0587df6f7cdddc5eac8"),
        (
            "0123456789abcdef",
            "26ca778d349cfed068d4e8af1341688e2a398f5d5ead29b629c95de83d3b7345",
        ),
        ("é€", "c8dd9680a9ff7c6cc1b80fc7b95cd31c"),
    ];

    #[test]
    fn key_derivation() {
        let c = Cipher::new("secret-key-123");
        assert_eq!(
            hex::encode(c.key),
            "30b7081680c1c64494e213492601b75f34b241624496a94d0fd0d370e6e0629e"
        );
        assert_eq!(hex::encode(c.iv), "7e73f5d10dcbee8f94a1b3a96e8afaf7");
    }

    #[test]
    fn test_vectors() {
        let c = Cipher::new("secret-key-123");
        for (plain, ct) in VECTORS {
            assert_eq!(&c.encrypt_hex(plain), ct);
            assert_eq!(&c.decrypt_hex(ct).unwrap(), plain);
        }
    }

    #[test]
    fn captured_reverse_command() {
        let c = Cipher::new("secret-key-123");
        let v = c
            .decrypt_json("29c1278a35ca413a97a70966f499e037528a7b4455f58e115b0d3eea906b677fddd888f3401ad635d9fa62699ed78e3d66ecb686bece565673fb934ba6c64488")
            .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"method_name":"ping","parameters":{"name":"app"}})
        );
    }

    #[test]
    fn bad_input_is_typed() {
        let c = Cipher::new("k");
        assert!(matches!(c.decrypt_hex("zz"), Err(CipherError::NotHex)));
        assert!(matches!(
            c.decrypt_hex("abcd"),
            Err(CipherError::BadPadding)
        ));
        assert!(Cipher::new("other")
            .decrypt_hex(&c.encrypt_hex("hello world"))
            .is_err());
        assert!(matches!(
            c.decrypt_json(&c.encrypt_hex("{nope")),
            Err(CipherError::NotJson(_))
        ));
        assert!(format!("{c:?}").find("k").is_none() || format!("{c:?}") == "Cipher(..)");
    }

    proptest! {
        #[test]
        fn roundtrip(secret in ".*", plain in ".*") {
            let c = Cipher::new(&secret);
            prop_assert_eq!(c.decrypt_hex(&c.encrypt_hex(&plain)).unwrap(), plain);
        }
    }
}
