//! Which output channels can be removed together (structured pruning): a layer's output
//! channels, with its bias and the batch norm after it, and the matching input channels of
//! the layers that read them. Channels that meet a residual addition are not listed: removing
//! one would have to remove it from every block of the stage at once.
use crate::Model;
use std::collections::HashSet;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelGroup {
    /// The producing conv or linear layer (its parameters' prefix).
    pub layer: String,
    /// The batch norm over its output, if any.
    pub norm: Option<String>,
    /// The layers that read its output (a linear layer after a flatten reads each channel as
    /// a block of spatial positions).
    pub consumers: Vec<String>,
}

impl Model {
    /// The model's removable channel groups: inside each residual block of a ResNet (every
    /// conv's output but the last), between consecutive layers of a plain stack (AlexNet,
    /// simple-cnn; the classifier's outputs excepted).
    pub fn channel_groups(&self) -> Vec<ChannelGroup> {
        let params = self.net.named_params();
        let weights: Vec<(String, usize)> = params
            .iter()
            .filter_map(|(n, p)| n.strip_suffix(".weight").map(|l| (l.to_string(), p.value().shape().len())))
            .filter(|(_, rank)| *rank == 2 || *rank == 4)
            .collect();
        if self.name.starts_with("resnet") {
            let names: HashSet<&str> = weights.iter().map(|(l, _)| l.as_str()).collect();
            return weights
                .iter()
                .filter_map(|(layer, _)| {
                    // `layerS.B.convI` inside a block, followed by `convI+1`.
                    let (block, conv) = layer.rsplit_once('.')?;
                    let i: usize = conv.strip_prefix("conv")?.parse().ok()?;
                    let next = format!("{block}.conv{}", i + 1);
                    (block.starts_with("layer") && names.contains(next.as_str())).then(|| ChannelGroup {
                        layer: layer.clone(),
                        norm: Some(format!("{block}.bn{i}")),
                        consumers: vec![next],
                    })
                })
                .collect();
        }
        weights.windows(2).map(|w| ChannelGroup { layer: w[0].0.clone(), norm: None, consumers: vec![w[1].0.clone()] }).collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::build;
    use tessera_engine::Device;

    #[test]
    fn groups_follow_each_architecture() {
        let cpu = Device::cpu();
        let r20 = build("resnet20-cifar", 10, &cpu, 0).unwrap().channel_groups();
        // 9 basic blocks, one removable group each (conv1's output, read by conv2).
        assert_eq!(r20.len(), 9);
        assert_eq!(r20[0].layer, "layer1.0.conv1");
        assert_eq!(r20[0].norm.as_deref(), Some("layer1.0.bn1"));
        assert_eq!(r20[0].consumers, vec!["layer1.0.conv2".to_string()]);
        let r50 = build("resnet50-cifar", 10, &cpu, 0).unwrap().channel_groups();
        assert_eq!(r50.len(), 2 * 16, "two inner outputs per bottleneck");
        let alex = build("alexnet-cifar", 10, &cpu, 0).unwrap().channel_groups();
        let layers: Vec<&str> = alex.iter().map(|g| g.layer.as_str()).collect();
        assert_eq!(layers, ["features.0", "features.3", "features.6", "features.8", "features.10", "classifier.1", "classifier.4"]);
        assert_eq!(alex[4].consumers, vec!["classifier.1".to_string()]);
    }
}
