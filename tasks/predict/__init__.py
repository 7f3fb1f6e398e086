"""Running a trained model folder on a user's own images and CT studies (`medconcept predict`)."""
