//! The FID Inception port against an independent numpy forward pass of the same TorchScript file
//! (`scripts/inception_reference.py`): the features of a few fixed images to 1e-4 relative.
//! Paths: `$IMM_INCEPTION_FIXTURE` (default tests/fixtures/inception-fid.safetensors) and the
//! converted weights at `$IMM_INCEPTION` or the cache (`python3 scripts/fid_weights.py` makes them).

use burn::tensor::{Device, Tensor, TensorData};
use imm::evaluation::inception::{FEATURES, Inception, default_weights};
use imm::io::safetensors::Tensors;

#[test]
fn features_match_the_numpy_reference() {
    let fixture = std::env::var("IMM_INCEPTION_FIXTURE").unwrap_or("tests/fixtures/inception-fid.safetensors".into());
    let fixture = Tensors::read(fixture.as_ref()).expect("fixture");
    let (images, expected) = (fixture.get("images").unwrap(), fixture.get("features").unwrap());
    let device = Device::flex();
    let net = Inception::load(&default_weights(), &device).unwrap_or_else(|e| panic!("{e}"));
    let [n, c, h, w] = images.shape[..] else { panic!("images are not 4-d") };
    let x = Tensor::<4>::from_data(TensorData::new(images.values.clone(), [n, c, h, w]), &device);
    let got = net.features(x).into_data().try_into_vec::<f32>().unwrap();
    assert_eq!(got.len(), n * FEATURES);
    let scale = expected.values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got.iter().zip(&expected.values).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("max |error| {worst:.3e} of max |feature| {scale:.3}");
    assert!(scale > 1.0, "the fixture's features are degenerate");
    assert!(worst <= 1e-4 * scale, "features differ from the reference: {worst:.3e} > 1e-4 x {scale:.3}");
}
